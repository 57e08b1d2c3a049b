import { describe, expect, it, vi } from 'vitest';
import { Switchboard } from '../src/client.js';
import type { Room } from '../src/room.js';
import { FakeEnvironment, FakePeerConnection, FakeSignaling, FakeTrack, settle, sfuOffer } from './fakes.js';
import { p2pJoin, setup, track } from './helpers.js';

describe('P2P room, newcomer side', () => {
  it('opens one connection per participant already there and sends it an offer via rtc.signal', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', p2pJoin(['alice', 'bob']));
    const room = await client.joinRoom('duo', { iceTransportPolicy: 'relay' });
    await settle();

    expect(room.mode).toBe('p2p');
    expect(env.pcs).toHaveLength(2);
    for (const pc of env.pcs) {
      expect(pc.config.iceServers).toEqual([{ urls: 'stun:stun.example.org' }]);
      expect(pc.config.iceTransportPolicy).toBe('relay');
      expect(pc.dataChannel).toBe('switchboard');
    }
    const signals = sig.callsOf('rtc.signal');
    expect(signals.map((s) => s.to).sort()).toEqual(['alice', 'bob']);
    for (const s of signals) {
      expect(s.room).toBe('duo');
      expect(s.data.description.type).toBe('offer');
      expect(s.data.tracks).toEqual([]);
    }
    expect(sig.callsOf('rtc.answer')).toEqual([]); // no SFU peer in P2P
  });

  it('applies the answer, relays ICE candidates both ways', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', p2pJoin(['alice']));
    await client.joinRoom('duo');
    await settle();
    const pc = env.pc(0);
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'alice', data: { description: { type: 'answer', sdp: sfuOffer([]) } } });
    await settle();
    expect(pc.signalingState).toBe('stable');
    expect(pc.remoteLog.map((d) => d.type)).toEqual(['answer']);

    pc.emitCandidate({ candidate: 'candidate:1 1 udp 1 10.0.0.1 5000 typ host', sdpMid: '0' });
    await settle();
    expect(sig.callsOf('rtc.signal').at(-1)).toEqual({
      room: 'duo',
      to: 'alice',
      data: { candidate: { candidate: 'candidate:1 1 udp 1 10.0.0.1 5000 typ host', sdpMid: '0' } },
    });
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'alice', data: { candidate: { candidate: 'candidate:2', sdpMid: '0' } } });
    await settle();
    expect(pc.candidates).toEqual([{ candidate: 'candidate:2', sdpMid: '0' }]);
  });
});

describe('P2P room, side already there', () => {
  it('answers a newcomer offer via rtc.signal, then offers its own published tracks', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', p2pJoin([]));
    const room = await client.joinRoom('duo');
    const cam = await room.publishCamera();
    expect(sig.callsOf('rtc.publish')).toEqual([]); // nothing to the SFU

    sig.push({ type: 'rtc.participant_joined', room: 'duo', participant: 'zed', user: 'u-zed' });
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'zed', data: { description: { type: 'offer', sdp: sfuOffer([]) }, tracks: [] } });
    await settle();
    const pc = env.pc(0);
    const signals = sig.callsOf('rtc.signal');
    expect(signals[0]).toMatchObject({ to: 'zed', data: { description: { type: 'answer' } } });
    // then our own offer with the camera, announced by mid, no simulcast in P2P
    expect(signals[1]).toMatchObject({ to: 'zed', data: { description: { type: 'offer' } } });
    const t = pc.transceivers.find((x) => x.sender.track === (cam.mediaTrack as unknown))!;
    expect(t.sendEncodings).toBeUndefined();
    expect(signals[1].data.tracks).toEqual([{ id: cam.localId, kind: 'video', source: 'camera', muted: false, mid: t.mid }]);
  });

  it('turns the peer\'s announced tracks into remote tracks, matched to media by mid', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', p2pJoin([]));
    const room = await client.joinRoom('duo');
    const published = vi.fn();
    const subscribed = vi.fn();
    room.on('trackPublished', published);
    room.on('trackSubscribed', subscribed);
    sig.push({
      type: 'rtc.signal',
      room: 'duo',
      from: 'zed',
      data: {
        description: { type: 'offer', sdp: sfuOffer([{ mid: '0', kind: 'audio', msid: 'x y' }, { mid: '1', kind: 'video', msid: 'x z' }]) },
        tracks: [
          { id: 'local-1', kind: 'audio', source: 'microphone', muted: false, mid: '0' },
          { id: 'local-2', kind: 'video', source: 'camera', muted: true, mid: '1' },
        ],
      },
    });
    await settle();
    expect(published.mock.calls.map((c) => [c[0].participant, c[0].id, c[0].via, c[0].muted])).toEqual([
      ['zed', 'local-1', 'p2p', false],
      ['zed', 'local-2', 'p2p', true],
    ]);
    const pc = env.pc(0);
    expect(subscribed.mock.calls.map((c) => c[0].mediaTrack)).toEqual([
      pc.transceivers.find((t) => t.mid === '0')!.receiver.track,
      pc.transceivers.find((t) => t.mid === '1')!.receiver.track,
    ]);

    // the peer unmutes its camera and stops its microphone
    const events: string[] = [];
    room.on('trackMuted', (t, m) => events.push(`muted ${t.id} ${m}`));
    room.on('trackUnpublished', (t) => events.push(`unpublished ${t.id}`));
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'zed', data: { tracks: [{ id: 'local-2', kind: 'video', source: 'camera', muted: false, mid: '1' }] } });
    await settle();
    expect(events).toEqual(['unpublished local-1', 'muted local-2 false']);

    // setSubscription has nothing to ask of a P2P peer
    await room.setSubscription(room.tracks[0]!, { maxSize: [160, 90] });
    expect(sig.callsOf('rtc.subscribe')).toEqual([]);

    // the peer leaves: its connection closes, its tracks go
    sig.push({ type: 'rtc.participant_left', room: 'duo', participant: 'zed', reason: 'left' });
    expect(pc.closed).toBe(true);
    expect(room.tracks).toEqual([]);
  });

  it('mutes by telling the peers (no rtc.mute)', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', p2pJoin(['alice']));
    const room = await client.joinRoom('duo');
    await settle();
    const mic = await room.publishMicrophone();
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'alice', data: { description: { type: 'answer', sdp: sfuOffer([]) } } });
    await settle();
    await room.mute(mic);
    await settle();
    expect(mic.mediaTrack.enabled).toBe(false);
    expect(sig.callsOf('rtc.mute')).toEqual([]);
    const last = sig.callsOf('rtc.signal').at(-1);
    expect(last.to).toBe('alice');
    expect(last.data.tracks).toEqual([expect.objectContaining({ id: mic.localId, muted: true, source: 'microphone' })]);
  });
});

/** Two clients whose rtc.signal calls reach each other (asynchronously, like a network). */
function pair() {
  const mk = (me: string) => {
    const sig = new FakeSignaling();
    const env = new FakeEnvironment();
    return { me, sig, env, client: new Switchboard(sig, { environment: env }) };
  };
  const a = mk('anna');
  const b = mk('bert');
  for (const [from, to] of [
    [a, b],
    [b, a],
  ] as const) {
    from.sig.on('rtc.signal', (req: any) => {
      setTimeout(() => to.sig.push({ type: 'rtc.signal', room: req.room, from: from.me, data: structuredClone(req.data) }), 0);
      return {};
    });
  }
  return { a, b };
}

function remoteMedia(room: Room, from: string): unknown[] {
  return room.tracks.filter((t) => t.participant === from && t.mediaTrack).map((t) => t.kind);
}

describe('two P2P clients negotiating with each other', () => {
  it('exchange tracks published on both sides at once (offers cross: perfect negotiation settles it)', async () => {
    const { a, b } = pair();
    a.sig.on('rtc.join', p2pJoin([], 'anna'));
    b.sig.on('rtc.join', p2pJoin(['anna'], 'bert'));
    const roomA = await a.client.joinRoom('duo');
    const roomB = await b.client.joinRoom('duo');
    await settle(20);
    expect([a.env.pc(0).signalingState, b.env.pc(0).signalingState]).toEqual(['stable', 'stable']);
    const offers = (x: typeof a) => x.sig.callsOf('rtc.signal').filter((s) => s.data.description?.type === 'offer').length;
    const before = [offers(a), offers(b)];
    const flaps: string[] = [];
    roomA.on('trackUnpublished', (t) => flaps.push(`anna lost ${t.id}`));
    roomB.on('trackUnpublished', (t) => flaps.push(`bert lost ${t.id}`));

    // both publish at the same moment: each side offers before it sees the other's offer
    await Promise.all([roomA.publishCamera(), roomA.publishMicrophone(), roomB.publishCamera()]);
    await settle(40);
    expect(offers(a)).toBeGreaterThan(before[0]!);
    expect(offers(b)).toBeGreaterThan(before[1]!);
    // a rolled-back offer does not make the other side drop tracks it was told about
    expect(flaps).toEqual([]);

    const pcA = a.env.pc(0);
    const pcB = b.env.pc(0);
    expect([pcA.signalingState, pcB.signalingState]).toEqual(['stable', 'stable']);
    expect(remoteMedia(roomB, 'anna').sort()).toEqual(['audio', 'video']);
    expect(remoteMedia(roomA, 'bert')).toEqual(['video']);
    // every received track is the receiver of the transceiver its mid names
    for (const [room, pc] of [
      [roomA, pcA],
      [roomB, pcB],
    ] as const) {
      for (const t of room.tracks) {
        expect(pc.transceivers.some((x) => x.receiver.track === (t.mediaTrack as unknown))).toBe(true);
      }
    }
    // and mute travels from one to the other
    const muted = vi.fn();
    roomB.on('trackMuted', muted);
    await roomA.mute(roomA.localTracks[0]!);
    await settle(10);
    expect(muted).toHaveBeenCalledWith(expect.objectContaining({ participant: 'anna', kind: 'video' }), true);
  });
});

describe('switching from P2P to the SFU', () => {
  async function inP2P(switchTimeout = 10_000) {
    const s = setup();
    s.sig.on('rtc.join', p2pJoin(['alice']));
    s.sig.on('rtc.publish', { sdp: 'sfu-answer' });
    const room = await s.client.joinRoom('duo', { switchTimeout });
    const cam = await room.publishCamera();
    await settle();
    const peer = s.env.pc(0);
    // alice answers and announces her microphone
    s.sig.push({
      type: 'rtc.signal',
      room: 'duo',
      from: 'alice',
      data: { description: { type: 'answer', sdp: sfuOffer([]) } },
    });
    s.sig.push({
      type: 'rtc.signal',
      room: 'duo',
      from: 'alice',
      data: { description: { type: 'offer', sdp: sfuOffer([{ mid: '9', kind: 'audio' }]) }, tracks: [{ id: 'local-7', kind: 'audio', source: 'microphone', muted: false, mid: '9' }] },
    });
    await settle();
    expect(room.tracks.map((t) => [t.id, t.via])).toEqual([['local-7', 'p2p']]);
    return { ...s, room, cam, peer };
  }

  it('answers the SFU offer, republishes local tracks with simulcast, closes P2P once the SFU is up', async () => {
    const { sig, env, room, cam, peer } = await inP2P();
    const events: string[] = [];
    room.on('modeChanged', (m) => events.push(`mode ${m}`));
    room.on('trackUnpublished', (t) => events.push(`unpublished ${t.id} ${t.via}`));
    room.on('trackPublished', (t) => events.push(`published ${t.id} ${t.via}`));

    const offer = sfuOffer([{ mid: '0', kind: 'audio', msid: 'alice TR-1-0' }]);
    sig.push({ type: 'rtc.mode', room: 'duo', mode: 'sfu', offer });
    await settle();
    expect(room.mode).toBe('sfu');
    const sub = env.pc(1);
    expect(sub.remoteLog[0]).toEqual({ type: 'offer', sdp: offer });
    expect(sig.callsOf('rtc.answer')).toEqual([{ room: 'duo', sdp: sub.localDescription!.sdp }]);
    const pub = env.pc(2);
    expect(pub.transceivers[0]!.sender.track).toBe(cam.mediaTrack as unknown);
    expect(pub.transceivers[0]!.sendEncodings?.map((e) => e.rid)).toEqual(['q', 'h', 'f']);
    expect(sig.callsOf('rtc.publish')).toEqual([
      { room: 'duo', sdp: pub.localDescription!.sdp, sources: { '0': 'camera' }, sizes: { '0': [1280, 720] } },
    ]);
    // media keeps flowing peer to peer until the SFU connection is up
    expect(peer.closed).toBe(false);
    sig.push({ type: 'rtc.track_published', room: 'duo', track: track('TR-1-0', 'alice', 'audio', 'microphone') });
    sig.push({ type: 'rtc.connected', room: 'duo' });
    await settle();
    expect(peer.closed).toBe(true);
    expect(events).toEqual(['mode sfu', 'published TR-1-0 sfu', 'unpublished local-7 p2p']);
    expect(room.tracks.map((t) => [t.id, t.via, !!t.mediaTrack])).toEqual([['TR-1-0', 'sfu', true]]);
    expect(room.participants.has('alice')).toBe(true);

    // the same Room API now goes through the SFU
    sig.push({ type: 'rtc.track_published', room: 'duo', track: track('TR-5-0', 'me') });
    await room.mute(cam);
    expect(sig.callsOf('rtc.mute')).toEqual([{ room: 'duo', track: 'TR-5-0', muted: true }]);
    expect(cam.mediaTrack.readyState).toBe('live'); // republished, never recaptured
  });

  it('closes P2P after the switch timeout when the SFU does not come up, and ignores late P2P signals', async () => {
    const { sig, env, room, peer } = await inP2P(30);
    sig.push({ type: 'rtc.mode', room: 'duo', mode: 'sfu', offer: sfuOffer([]) });
    await settle();
    expect(peer.closed).toBe(false);
    await new Promise((r) => setTimeout(r, 50));
    expect(peer.closed).toBe(true);
    const pcs = env.pcs.length;
    sig.push({ type: 'rtc.signal', room: 'duo', from: 'alice', data: { description: { type: 'offer', sdp: sfuOffer([]) } } });
    await settle();
    expect(env.pcs.length).toBe(pcs);
    expect(room.mode).toBe('sfu');
  });

  it('sends no signals after the switch and takes the refusal of a signal raced by the switch quietly', async () => {
    const { sig, room, peer } = await inP2P();
    const errors: unknown[] = [];
    room.on('error', (e) => errors.push(e));
    // Other failures of a signal surface…
    sig.on('rtc.signal', () => Promise.reject({ code: 100, message: 'internal' }));
    peer.emitCandidate({ candidate: 'candidate:8 1 udp 1 10.0.0.9 4999 typ host', sdpMid: '0' });
    await settle();
    expect(errors).toEqual([{ code: 100, message: 'internal' }]);
    errors.length = 0;
    // …but not this one: the server switched already, its rtc.mode push has not arrived.
    sig.on('rtc.signal', () => Promise.reject({ code: 107, message: 'room is not in p2p mode' }));
    peer.emitCandidate({ candidate: 'candidate:9 1 udp 1 10.0.0.9 5000 typ host', sdpMid: '0' });
    await settle();
    expect(errors).toEqual([]);
    sig.push({ type: 'rtc.mode', room: 'duo', mode: 'sfu', offer: sfuOffer([]) });
    await settle();
    const sent = sig.callsOf('rtc.signal').length;
    peer.emitCandidate({ candidate: 'candidate:10 1 udp 1 10.0.0.9 5001 typ host', sdpMid: '0' });
    await settle();
    expect(sig.callsOf('rtc.signal').length).toBe(sent);
    expect(errors).toEqual([]);
  });

  it('leave during P2P closes the peer connections and stops local tracks', async () => {
    const { sig, room, cam, peer } = await inP2P();
    await room.leave();
    expect(peer.closed).toBe(true);
    expect((cam.mediaTrack as unknown as FakeTrack).readyState).toBe('ended');
    expect(sig.callsOf('rtc.leave')).toEqual([{ room: 'duo' }]);
  });
});

// keep the import used even if a test above is skipped
void FakePeerConnection;
