// The call tests' client on the real browser SDK: the bundle the server
// embeds (its /sdk/switchboard.js, proxied by the page server as
// /switchboard.js). Exposes the surface the tests drive as `window.sb`
// (connect, join, leave, inboundStats, selectedPairs, connectionNames,
// participants, events, errors, …); everything else is the SDK's own work.
import { Centrifuge, Switchboard, browserEnvironment } from '/switchboard.js';

const sb = {
  client: null,
  room: null,
  joinResult: null, // the rtc.join result (SDP elided), from the wire
  events: [], // every push received, in arrival order
  errors: [], // the room's 'error' events and failed steps (the tests assert it stays empty)
  dataChannels: [], // labels of data channels the remote side opened
  get participant() {
    return sb.room?.participant ?? null;
  },
  get mode() {
    return sb.room?.mode ?? null;
  },
  // The others, in the order they became known.
  get participants() {
    return sb.room ? [...sb.room.participants.keys()] : [];
  },
  get states() {
    return Object.fromEntries(connections().map((c) => [c.name, c.pc.connectionState]));
  },
};
window.sb = sb;
window.Centrifuge = Centrifuge;

// The browser's media APIs, noting the data channels every connection gets.
const base = browserEnvironment();
const environment = {
  ...base,
  createPeerConnection(config) {
    const pc = base.createPeerConnection(config);
    pc.addEventListener('datachannel', (e) => sb.dataChannels.push(e.channel.label));
    return pc;
  },
};

sb.connect = async ({ url, token }) => {
  const centrifuge = new Centrifuge(url, token ? { token } : {});
  // Keep what the wire says: pushes and the join result.
  centrifuge.on('message', (ctx) => sb.events.push(ctx.data));
  const rpc = centrifuge.rpc.bind(centrifuge);
  centrifuge.rpc = async (method, data) => {
    const r = await rpc(method, data);
    if (method === 'rtc.join') sb.joinResult = { ...r.data, offer: r.data.offer ? '(sdp)' : undefined };
    return r;
  };
  sb.client = new Switchboard(centrifuge, { environment });
  centrifuge.connect();
  await centrifuge.ready(10000);
};

// Joins `room` with the fake camera and microphone; resolves once both are
// published. relay: iceTransportPolicy 'relay'.
sb.join = async ({ room, relay = false, simulcast = true }) => {
  const r = sb.client.room(room, relay ? { iceTransportPolicy: 'relay' } : {});
  sb.room = r;
  r.on('error', (e) => sb.errors.push(`room error: ${JSON.stringify(e?.message ?? e)}`));
  r.on('trackSubscribed', (track) => {
    if (track.kind !== 'video') return;
    const v = document.createElement('video');
    v.muted = true;
    v.autoplay = true;
    v.playsInline = true;
    v.dataset.key = track.key;
    track.attach(v);
    document.getElementById('videos').append(v);
  });
  r.on('trackUnpublished', (track) => document.querySelector(`video[data-key="${CSS.escape(track.key)}"]`)?.remove());
  await r.join();
  await r.publishCamera({ simulcast, constraints: { width: 640, height: 360, frameRate: 15 } });
  await r.publishMicrophone();
  return { participant: r.participant, mode: r.mode };
};

sb.leave = () => sb.room.leave();

sb.disconnect = () => sb.client?.disconnect();

function connections() {
  const r = sb.room;
  if (!r) return [];
  const list = [];
  const { subscriber, publisher } = r.sfuConnections;
  if (subscriber) list.push({ name: 'sub', via: 'sfu', pc: subscriber });
  if (publisher) list.push({ name: 'pub', via: 'sfu', pc: publisher });
  for (const [peer, pc] of r.peerConnections) list.push({ name: `p2p:${peer}`, via: 'p2p', pc, peer });
  return list;
}

// What this page receives, per sending participant and path:
// {<participant>: {sfu?: {framesDecoded, videoBytes, audioBytes}, p2p?: {…}}}.
sb.inboundStats = async () => {
  const owners = new Map();
  for (const t of sb.room?.tracks ?? []) if (t.mediaTrack) owners.set(t.mediaTrack.id, t.participant);
  const out = {};
  for (const { via, pc, peer, name } of connections()) {
    if (name === 'pub') continue;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp' || !s.trackIdentifier) return; // skip Chrome's unsignaled placeholder
      const owner = peer || owners.get(s.trackIdentifier) || '?';
      out[owner] ??= {};
      const o = (out[owner][via] ??= { framesDecoded: 0, videoBytes: 0, audioBytes: 0 });
      if (s.kind === 'video') {
        o.framesDecoded += s.framesDecoded || 0;
        o.videoBytes += s.bytesReceived || 0;
      } else if (s.kind === 'audio') {
        o.audioBytes += s.bytesReceived || 0;
      }
    });
  }
  return out;
};

// The selected ICE candidate pair of every peer connection.
sb.selectedPairs = async () => {
  const out = [];
  for (const { name, pc } of connections()) {
    const stats = await pc.getStats();
    stats.forEach((t) => {
      if (t.type !== 'transport' || !t.selectedCandidatePairId) return;
      const pair = stats.get(t.selectedCandidatePairId);
      const l = stats.get(pair.localCandidateId);
      const r = stats.get(pair.remoteCandidateId);
      const cand = (c) => ({ type: c.candidateType, address: c.address, port: c.port, protocol: c.protocol, relayProtocol: c.relayProtocol });
      out.push({ pc: name, state: pair.state, local: cand(l), remote: cand(r) });
    });
  }
  return out;
};

sb.connectionNames = () => connections().map((c) => c.name);
