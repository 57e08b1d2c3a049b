import { describe, expect, it, vi } from 'vitest';
import { SIMULCAST_ENCODINGS } from '../src/room.js';
import { deferred, FakeTrack, settle, sfuOffer } from './fakes.js';
import { setup, sfuJoin, track } from './helpers.js';

describe('joining an SFU room', () => {
  it('answers the join offer with rtc.answer on a subscriber connection configured with the ICE servers', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup', { iceTransportPolicy: 'relay' });

    expect(sig.methods()).toEqual(['rtc.join', 'rtc.answer']);
    expect(sig.calls[0]!.data).toEqual({ room: 'standup' });
    const sub = env.pc(0);
    expect(sub.remoteLog[0]).toEqual({ type: 'offer', sdp: sfuJoin().offer });
    expect(sig.callsOf('rtc.answer')[0]).toEqual({ room: 'standup', sdp: sub.localDescription!.sdp });
    expect(sub.signalingState).toBe('stable');
    expect(sub.config.iceTransportPolicy).toBe('relay');
    expect(sub.config.iceServers).toEqual([
      { urls: ['stun:stun.example.org:3478'] },
      { urls: ['turn:turn.example.org:3478?transport=udp'], username: '1700000000:me', credential: 'c2VjcmV0' },
    ]);
    expect(room.participant).toBe('me');
    expect(room.mode).toBe('sfu');
    expect([...room.participants.keys()]).toEqual(['alice']);
    expect(room.participants.get('alice')!.user).toBeNull(); // a server that does not say
  });

  it("knows the users of the participants already there from the join result's users", async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', sfuJoin({ participants: ['alice', 'carol'], users: { alice: 'u-alice', carol: 'u-carol' } }));
    const room = await client.joinRoom('standup');
    expect([...room.participants.values()].map((p) => [p.id, p.user])).toEqual([
      ['alice', 'u-alice'],
      ['carol', 'u-carol'],
    ]);
  });

  it('matches received media to tracks by the msid of its mid and emits the events to listeners added before join', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = client.room('standup');
    const published = vi.fn();
    const subscribed = vi.fn();
    room.on('trackPublished', published);
    room.on('trackSubscribed', subscribed);
    await room.join();

    expect(published).toHaveBeenCalledTimes(1);
    const t = published.mock.calls[0]![0];
    expect(t).toMatchObject({ id: 'TR-1-0', participant: 'alice', kind: 'video', source: 'camera', via: 'sfu' });
    expect(subscribed).toHaveBeenCalledWith(t);
    const receiver = env.pc(0).transceivers.find((x) => x.mid === '0')!.receiver.track;
    expect(t.mediaTrack).toBe(receiver);
    expect(room.tracks).toEqual([t]);
  });

  it('answers later rtc.offer pushes and binds the new track whichever of offer and track_published comes first', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    const subscribed = vi.fn();
    room.on('trackSubscribed', subscribed);

    // bob joins: his track is announced after the offer carrying it
    const offer2 = sfuOffer([
      { mid: '0', kind: 'video', msid: 'alice TR-1-0' },
      { mid: '1', kind: 'audio', msid: 'bob TR-2-0' },
    ]);
    sig.push({ type: 'rtc.participant_joined', room: 'standup', participant: 'bob', user: 'u-bob' });
    sig.push({ type: 'rtc.offer', room: 'standup', sdp: offer2 });
    await settle();
    expect(sig.callsOf('rtc.answer')).toHaveLength(2);
    expect(env.pcs).toHaveLength(1); // the same subscriber connection
    expect(subscribed).not.toHaveBeenCalled(); // no track info yet
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-2-0', 'bob', 'audio', 'microphone') });
    expect(subscribed).toHaveBeenCalledTimes(1);
    const bobTrack = subscribed.mock.calls[0]![0];
    expect(bobTrack.mediaTrack).toBe(env.pc(0).transceivers.find((x) => x.mid === '1')!.receiver.track);
    expect(room.participants.get('bob')!.user).toBe('u-bob');
    expect(room.participants.get('bob')!.tracks.get('TR-2-0')).toBe(bobTrack);

    // carol: announced before her offer
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-3-0', 'carol') });
    expect(room.tracks.find((t) => t.id === 'TR-3-0')!.mediaTrack).toBeNull();
    sig.push({
      type: 'rtc.offer',
      room: 'standup',
      sdp: sfuOffer([
        { mid: '0', kind: 'video', msid: 'alice TR-1-0' },
        { mid: '1', kind: 'audio', msid: 'bob TR-2-0' },
        { mid: '2', kind: 'video', msid: 'carol TR-3-0' },
      ]),
    });
    await settle();
    expect(sig.callsOf('rtc.answer')).toHaveLength(3);
    const carol = room.tracks.find((t) => t.id === 'TR-3-0')!;
    expect(carol.mediaTrack).toBe(env.pc(0).transceivers.find((x) => x.mid === '2')!.receiver.track);
  });

  it('answers one offer at a time', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    await client.joinRoom('standup');
    const slow = deferred<object>();
    sig.on('rtc.answer', () => slow.promise);
    sig.push({ type: 'rtc.offer', room: 'standup', sdp: sfuOffer([{ mid: '0', kind: 'video' }]) });
    sig.push({ type: 'rtc.offer', room: 'standup', sdp: sfuOffer([{ mid: '1', kind: 'video' }]) });
    await settle();
    // the second offer waits for the first answer's RPC to finish
    expect(env.pc(0).remoteLog).toHaveLength(2);
    expect(sig.callsOf('rtc.answer')).toHaveLength(2);
    slow.resolve({});
    await settle();
    expect(env.pc(0).remoteLog).toHaveLength(3);
    expect(sig.callsOf('rtc.answer')).toHaveLength(3);
  });

  it('ignores pushes for other rooms and unknown push types', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    const joined = vi.fn();
    room.on('participantJoined', joined);
    sig.push({ type: 'rtc.participant_joined', room: 'other', participant: 'x' });
    sig.push({ type: 'rtc.offer', room: 'other', sdp: sfuOffer([]) });
    sig.push({ type: 'chat', room: 'standup' });
    sig.push('not an object');
    await settle();
    expect(joined).not.toHaveBeenCalled();
    expect(sig.callsOf('rtc.answer')).toHaveLength(1);
  });

  it('handles pushes that arrive before the join result', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', () => {
      sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-9-0', 'zed') });
      return sfuJoin({ tracks: [], participants: [] });
    });
    const room = await client.joinRoom('standup');
    expect(room.tracks.map((t) => t.id)).toEqual(['TR-9-0']);
    expect(room.participants.has('zed')).toBe(true);
  });

  it('leaving while rtc.join is on its way leaves on the server once it answers', async () => {
    const { sig, client } = setup();
    const reply = deferred<object>();
    sig.on('rtc.join', () => reply.promise);
    const room = client.room('standup');
    const joining = room.join();
    await room.leave();
    reply.resolve(sfuJoin());
    await expect(joining).rejects.toThrow('left while joining');
    expect(sig.methods()).toEqual(['rtc.join', 'rtc.leave']);
    expect(room.state).toBe('closed');
  });

  it('rejects and unregisters when rtc.join fails', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', () => Promise.reject(Object.assign(new Error('permission denied'), { code: 103 })));
    await expect(client.joinRoom('standup')).rejects.toThrow('permission denied');
    expect(sig.listeners).toBe(1); // only the client's own call listener remains
  });
});

describe('publishing to the SFU', () => {
  async function joined() {
    const s = setup();
    s.sig.on('rtc.join', sfuJoin());
    s.sig.on('rtc.publish', (req: any) => ({ sdp: `answer-to:${req.sdp.length}` }));
    const room = await s.client.joinRoom('standup');
    return { ...s, room };
  }

  it('publishes the camera with three simulcast layers q/h/f scaled 4/2/1 on a separate publisher connection', async () => {
    const { sig, env, room } = await joined();
    const local = await room.publishCamera({ simulcast: true });

    expect(env.media).toEqual([{ video: true }]);
    expect(env.pcs).toHaveLength(2);
    const pub = env.pc(1);
    expect(pub.config.iceServers).toEqual(env.pc(0).config.iceServers);
    const t = pub.transceivers[0]!;
    expect(t.direction).toBe('sendonly');
    expect(t.sender.track).toBe(local.mediaTrack);
    expect(t.sendEncodings).toEqual([
      { rid: 'q', scaleResolutionDownBy: 4 },
      { rid: 'h', scaleResolutionDownBy: 2 },
      { rid: 'f', scaleResolutionDownBy: 1 },
    ]);
    expect(SIMULCAST_ENCODINGS.map((e) => e.rid)).toEqual(['q', 'h', 'f']);
    const req = sig.callsOf('rtc.publish')[0];
    expect(req).toEqual({ room: 'standup', sdp: pub.localDescription!.sdp, sources: { '0': 'camera' }, sizes: { '0': [1280, 720] } });
    expect(pub.remoteLog).toEqual([{ type: 'answer', sdp: `answer-to:${req.sdp.length}` }]);
    expect(pub.signalingState).toBe('stable');
    expect(room.localTracks).toEqual([local]);
  });

  it('publishes microphone and screen with their sources, no simulcast, one negotiation each', async () => {
    const { sig, env, room } = await joined();
    await room.publishMicrophone();
    await room.publishScreen();
    expect(env.media).toEqual([{ audio: true }]);
    expect(env.display).toEqual([{ video: true, audio: false }]);
    const publishes = sig.callsOf('rtc.publish');
    expect(publishes).toHaveLength(2);
    expect(publishes[0].sources).toEqual({ '0': 'microphone' });
    expect(publishes[1].sources).toEqual({ '0': 'microphone', '1': 'screen' });
    expect(publishes[1].sizes).toEqual({ '1': [1920, 1080] });
    expect(env.pc(1).transceivers.map((t) => t.sendEncodings)).toEqual([undefined, undefined]);
  });

  it('unpublishes a screen share when the browser ends it, renegotiating without it', async () => {
    const { sig, env, room } = await joined();
    const unpublished = vi.fn();
    room.on('localTrackUnpublished', unpublished);
    const screen = await room.publishScreen();
    (screen.mediaTrack as unknown as FakeTrack).end();
    await settle();
    expect(unpublished).toHaveBeenCalledWith(screen);
    expect(room.localTracks).toEqual([]);
    const publishes = sig.callsOf('rtc.publish');
    expect(publishes).toHaveLength(2);
    expect(publishes[1].sources).toEqual({}); // the m-line stays, inactive, with no source
    expect(publishes[1].sdp).toContain('a=inactive');
    expect(env.pc(1).transceivers[0]!.sender.track).toBeNull();
  });

  it('stops the captured track and rethrows when the server refuses the publication', async () => {
    const { sig, env, room } = await joined();
    sig.on('rtc.publish', () => Promise.reject(new Error('103: publish_video not granted')));
    await expect(room.publishCamera()).rejects.toThrow('publish_video');
    expect(env.tracks[0]!.readyState).toBe('ended');
    expect(room.localTracks).toEqual([]);
  });

  it('mutes with rtc.mute and a disabled track, without renegotiating', async () => {
    const { sig, room } = await joined();
    const mic = await room.publishMicrophone();
    const muted = vi.fn();
    room.on('trackMuted', muted);
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-7-0', 'me', 'audio', 'microphone') });
    expect(mic.serverId).toBe('TR-7-0');
    expect(room.tracks.map((t) => t.participant)).toEqual(['alice']); // our own track is not a remote one

    await room.mute(mic);
    expect(mic.mediaTrack.enabled).toBe(false);
    expect(sig.callsOf('rtc.mute')).toEqual([{ room: 'standup', track: 'TR-7-0', muted: true }]);
    expect(muted).toHaveBeenCalledWith(mic, true);
    // the server's echo does not emit twice
    sig.push({ type: 'rtc.track_muted', room: 'standup', participant: 'me', track: 'TR-7-0', muted: true });
    expect(muted).toHaveBeenCalledTimes(1);

    await room.unmute(mic);
    expect(mic.mediaTrack.enabled).toBe(true);
    expect(sig.callsOf('rtc.mute')[1]).toEqual({ room: 'standup', track: 'TR-7-0', muted: false });
    expect(sig.callsOf('rtc.publish')).toHaveLength(1);
  });

  it('mute waits for the SFU to announce the track id', async () => {
    const { sig, room } = await joined();
    const cam = await room.publishCamera();
    const done = room.mute(cam);
    await settle();
    expect(sig.callsOf('rtc.mute')).toEqual([]);
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-4-0', 'me') });
    await done;
    expect(sig.callsOf('rtc.mute')).toEqual([{ room: 'standup', track: 'TR-4-0', muted: true }]);
  });

  it('follows a server-side mute of its own track (room_mute_track)', async () => {
    const { sig, room } = await joined();
    const mic = await room.publishMicrophone();
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-7-0', 'me', 'audio', 'microphone') });
    sig.push({ type: 'rtc.track_muted', room: 'standup', participant: 'me', track: 'TR-7-0', muted: true });
    expect(mic.muted).toBe(true);
    expect(mic.mediaTrack.enabled).toBe(false);
  });

  it('sets subscription preferences with rtc.subscribe', async () => {
    const { sig, room } = await joined();
    const alice = room.tracks[0]!;
    await room.setSubscription(alice, { maxSize: [320, 180], maxLayer: 'medium' });
    await room.setSubscription(alice, { paused: true });
    expect(sig.callsOf('rtc.subscribe')).toEqual([
      { room: 'standup', track: 'TR-1-0', max_layer: 'medium', max_size: [320, 180], paused: false },
      { room: 'standup', track: 'TR-1-0', paused: true },
    ]);
  });
});

describe('room events', () => {
  it('reports participants, tracks, mutes, speakers, quality and connection', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    const events: string[] = [];
    room.on('participantJoined', (p) => events.push(`joined ${p.id} ${p.user}`));
    room.on('participantLeft', (p, reason) => events.push(`left ${p.id} ${reason}`));
    room.on('trackUnpublished', (t) => events.push(`unpublished ${t.id}`));
    room.on('trackMuted', (t, m) => events.push(`muted ${t.id} ${m}`));
    room.on('activeSpeakers', (s) => events.push(`speakers ${s.map((x) => x.participant).join(',')}`));
    room.on('quality', (p, q) => events.push(`quality ${p} ${q}`));
    room.on('connected', () => events.push('connected'));

    sig.push({ type: 'rtc.connected', room: 'standup' });
    env.pc(0).setConnectionState('connected'); // the same fact, seen by the browser: no second event
    sig.push({ type: 'rtc.participant_joined', room: 'standup', participant: 'bob', user: 'u2' });
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-2-1', 'bob', 'audio', 'microphone') });
    sig.push({ type: 'rtc.track_muted', room: 'standup', participant: 'alice', track: 'TR-1-0', muted: true });
    sig.push({ type: 'rtc.active_speakers', room: 'standup', speakers: [{ participant: 'bob', level: 80 }] });
    sig.push({ type: 'rtc.quality', room: 'standup', participant: 'alice', quality: 'poor' });
    sig.push({ type: 'rtc.track_unpublished', room: 'standup', participant: 'alice', track: 'TR-1-0' });
    sig.push({ type: 'rtc.participant_left', room: 'standup', participant: 'bob', reason: 'vanished' });

    expect(events).toEqual([
      'connected',
      'joined bob u2',
      'muted TR-1-0 true',
      'speakers bob',
      'quality alice poor',
      'unpublished TR-1-0',
      'unpublished TR-2-1',
      'left bob vanished',
    ]);
    expect(room.participants.get('alice')!.quality).toBe('poor');
    expect(room.participants.has('bob')).toBe(false);
    expect(room.tracks).toEqual([]);
  });

  it('tears down when removed by an admin or when the room ends', async () => {
    for (const [push, event] of [
      ['rtc.removed', 'removed'],
      ['rtc.room_ended', 'ended'],
    ] as const) {
      const { sig, env, client } = setup();
      sig.on('rtc.join', sfuJoin());
      const room = await client.joinRoom('standup');
      const cam = await room.publishCamera();
      const seen: string[] = [];
      room.on(event, () => seen.push(event));
      room.on('closed', (r) => seen.push(`closed ${r}`));
      sig.push({ type: push, room: 'standup' });
      expect(seen).toEqual([event, `closed ${event}`]);
      expect(env.pcs.every((pc) => pc.closed)).toBe(true);
      expect((cam.mediaTrack as unknown as FakeTrack).readyState).toBe('ended');
      expect(room.state).toBe('closed');
    }
  });

  it('closes with the reason when the SFU drops this participant', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    const closed = vi.fn();
    room.on('closed', closed);
    sig.push({ type: 'rtc.participant_left', room: 'standup', participant: 'me', reason: 'ice_timeout' });
    expect(closed).toHaveBeenCalledWith('ice_timeout');
  });
});

describe('leave', () => {
  it('closes both connections, stops local tracks, tells the server and ignores later pushes', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    sig.on('rtc.publish', { sdp: 'answer' });
    const room = await client.joinRoom('standup');
    const cam = await room.publishCamera();
    const mic = await room.publishMicrophone();
    const closed = vi.fn();
    room.on('closed', closed);
    await room.leave();

    expect(sig.callsOf('rtc.leave')).toEqual([{ room: 'standup' }]);
    expect(env.pcs).toHaveLength(2);
    expect(env.pcs.map((pc) => pc.closed)).toEqual([true, true]);
    expect([cam, mic].map((t) => (t.mediaTrack as unknown as FakeTrack).readyState)).toEqual(['ended', 'ended']);
    expect(closed).toHaveBeenCalledWith('left');
    const before = sig.calls.length;
    sig.push({ type: 'rtc.offer', room: 'standup', sdp: sfuOffer([]) });
    await settle();
    expect(sig.calls.length).toBe(before);
    await room.leave(); // idempotent
    expect(sig.callsOf('rtc.leave')).toHaveLength(1);
    await expect(room.publishMicrophone()).rejects.toThrow(/not joined/);
  });

  it('tells the server before closing the connections (so the others hear "left", not "vanished")', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    sig.on('rtc.publish', { sdp: 'answer' });
    const room = await client.joinRoom('standup');
    await room.publishCamera();
    let closedWhenTold: boolean[] = [];
    sig.on('rtc.leave', () => {
      closedWhenTold = env.pcs.map((pc) => pc.closed);
      return {};
    });
    await room.leave();
    expect(closedWhenTold).toEqual([false, false]);
    expect(env.pcs.map((pc) => pc.closed)).toEqual([true, true]);
  });

  it('closes anyway when the server does not answer rtc.leave', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    sig.on('rtc.leave', () => new Promise(() => {}));
    const t0 = Date.now();
    await room.leave();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(room.state).toBe('closed');
    expect(env.pcs.every((pc) => pc.closed)).toBe(true);
  });
});

describe('reconnect', () => {
  it('rejoins when the connection comes back as a new client and republishes the same tracks', async () => {
    const { sig, env, client } = setup();
    let joins = 0;
    sig.on('rtc.join', () => (++joins === 1 ? sfuJoin() : sfuJoin({ participant: 'me-2' })));
    sig.on('rtc.publish', { sdp: 'answer' });
    const room = await client.joinRoom('standup');
    const cam = await room.publishCamera();
    const mic = await room.publishMicrophone();
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-5-1', 'me', 'audio', 'microphone') });
    await room.mute(mic);
    const events: string[] = [];
    for (const ev of ['reconnecting', 'reconnected', 'participantLeft', 'participantJoined', 'trackSubscribed', 'closed'] as const) {
      room.on(ev, (x?: any) => events.push(`${ev}${x && typeof x === 'object' ? ` ${x.id}` : ''}`));
    }

    sig.connection({ type: 'connected', client: 'me' }); // same session: nothing to do
    await settle();
    expect(sig.callsOf('rtc.join')).toHaveLength(1);

    const before = sig.calls.length;
    sig.connection({ type: 'connected', client: 'me-2' });
    await settle();
    sig.push({ type: 'rtc.track_published', room: 'standup', track: track('TR-8-1', 'me-2', 'audio', 'microphone') });
    await settle();
    const after = sig.methods().slice(before);
    expect(after[0]).toBe('rtc.join');
    expect(after.slice(1, 3).sort()).toEqual(['rtc.answer', 'rtc.publish']); // two connections, either order
    expect(after.slice(3)).toEqual(['rtc.mute']);
    expect(room.participant).toBe('me-2');
    expect(env.pcs.slice(0, 2).map((pc) => pc.closed)).toEqual([true, true]);
    expect(env.pcs.slice(2).map((pc) => pc.closed)).toEqual([false, false]);
    const pub = env.pcs[3]!;
    expect(pub.transceivers.map((t) => t.sender.track)).toEqual([cam.mediaTrack, mic.mediaTrack]);
    expect(sig.callsOf('rtc.publish').at(-1).sources).toEqual({ '0': 'camera', '1': 'microphone' });
    expect(sig.callsOf('rtc.mute').at(-1)).toEqual({ room: 'standup', track: 'TR-8-1', muted: true });
    expect(cam.mediaTrack.readyState).toBe('live');
    expect(events).toEqual(['reconnecting', 'participantLeft alice', 'participantJoined alice', 'trackSubscribed TR-1-0', 'reconnected']);
  });

  it('joins again on the same connection when the room moves to another media node', async () => {
    const { sig, env, client } = setup();
    sig.on('rtc.join', sfuJoin());
    sig.on('rtc.publish', { sdp: 'answer' });
    const room = await client.joinRoom('standup');
    const cam = await room.publishCamera();
    const events: string[] = [];
    for (const ev of ['reconnecting', 'reconnected', 'closed'] as const) room.on(ev, () => events.push(ev));
    const before = sig.calls.length;
    sig.push({ type: 'rtc.reconnect', room: 'other-room', reason: 'moved' });
    await settle();
    expect(sig.calls.length).toBe(before); // another room's move is not ours
    sig.push({ type: 'rtc.reconnect', room: 'standup', reason: 'node_lost' });
    await settle();
    const after = sig.methods().slice(before);
    expect(after[0]).toBe('rtc.join');
    expect(after.slice(1).sort()).toEqual(['rtc.answer', 'rtc.publish']);
    expect(room.state).toBe('joined');
    expect(env.pcs.slice(0, 2).map((pc) => pc.closed)).toEqual([true, true]);
    expect(env.pcs[3]!.transceivers.map((t) => t.sender.track)).toEqual([cam.mediaTrack]);
    expect(events).toEqual(['reconnecting', 'reconnected']);
  });

  it('closes when the connection is closed for good', async () => {
    const { sig, client } = setup();
    sig.on('rtc.join', sfuJoin());
    const room = await client.joinRoom('standup');
    const closed = vi.fn();
    room.on('closed', closed);
    sig.connection({ type: 'disconnected', reason: 'disconnect called' });
    expect(closed).toHaveBeenCalledWith('disconnected');
    expect(sig.connectionListeners).toBe(0);
  });
});
