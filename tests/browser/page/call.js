// Minimal call client for the browser tests: the signaling of docs/MEDIA.md
// ("Signaling protocol", "Rooms, peer-to-peer and 1:1 calls") in plain JS on
// centrifuge-js. It is a test page, kept small: the browser SDK (sdk/js)
// replaces it later. The tests drive it through `window.sb`.
'use strict';
(() => {
  const sb = {
    participant: null, // own participant id (the connection's client id)
    room: null,
    mode: null, // 'sfu' | 'p2p'
    participants: [], // the others, in the order they became known
    users: {}, // participant -> user
    tracks: {}, // SFU track id -> track (from rtc.join and rtc.track_published)
    events: [], // every push received, in arrival order
    errors: [], // failures of the signaling work (the tests assert it stays empty)
    states: {}, // peer connection name -> connectionState
    dataChannels: [], // labels of data channels opened by the SFU
    sub: null, // subscriber peer connection (SFU offers)
    pub: null, // publisher peer connection (we offer)
    p2p: new Map(), // participant -> peer-to-peer connection
  };
  window.sb = sb;

  let client = null;
  let local = null; // MediaStream from the fake camera and microphone
  let iceServers = [];
  let policy = 'all';
  let simulcast = true;
  const trackOwner = {}; // receiver track id -> participant (from msid / p2p peer)

  // All signaling work runs one step at a time, in arrival order.
  let chain = Promise.resolve();
  function serial(fn) {
    const p = chain.then(fn);
    chain = p.catch((e) => sb.errors.push(String((e && e.stack) || e)));
    return p;
  }

  async function rpc(method, data) {
    const r = await client.rpc(method, data);
    return r.data;
  }

  sb.connect = async ({ url, token }) => {
    client = new Centrifuge(url, token ? { token } : {});
    client.on('message', (ctx) => {
      const msg = ctx.data;
      sb.events.push(msg);
      serial(() => onPush(msg)).catch(() => {});
    });
    client.connect();
    await client.ready(10000);
  };

  // Joins `room`; resolves once the join is negotiated (SFU peers set up or
  // peer-to-peer offers sent). relay: iceTransportPolicy 'relay'.
  sb.join = ({ room, relay = false, simulcast: sim = true }) =>
    serial(async () => {
      policy = relay ? 'relay' : 'all';
      simulcast = sim;
      local = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: 640, height: 360, frameRate: 15 },
      });
      const res = await rpc('rtc.join', { room });
      sb.room = room;
      sb.participant = res.participant;
      sb.joinResult = { ...res, offer: res.offer ? '(sdp)' : undefined };
      iceServers = res.ice_servers || [];
      for (const t of res.tracks || []) sb.tracks[t.id] = t;
      for (const p of res.participants || []) addParticipant(p);
      sb.mode = res.mode || 'sfu';
      if (sb.mode === 'sfu') {
        await startSfu(res.offer);
      } else {
        // The newcomer offers to everyone already there.
        for (const p of sb.participants) await offerP2p(p);
      }
      return { participant: sb.participant, mode: sb.mode };
    });

  sb.leave = () =>
    serial(async () => {
      await rpc('rtc.leave', { room: sb.room });
      closeAll();
    });

  sb.disconnect = () => {
    closeAll();
    if (client) client.disconnect();
  };

  function closeAll() {
    for (const pc of [sb.sub, sb.pub, ...sb.p2p.values()]) if (pc) pc.close();
    sb.sub = sb.pub = null;
    sb.p2p.clear();
    if (local) for (const t of local.getTracks()) t.stop();
  }

  function addParticipant(p, user) {
    if (p === sb.participant) return;
    if (!sb.participants.includes(p)) sb.participants.push(p);
    if (user !== undefined) sb.users[p] = user;
  }

  async function onPush(msg) {
    if (msg.room !== undefined && msg.room !== sb.room) return;
    switch (msg.type) {
      case 'rtc.offer':
        await answerSubscriber(msg.sdp);
        break;
      case 'rtc.participant_joined':
        addParticipant(msg.participant, msg.user);
        break;
      case 'rtc.participant_left': {
        sb.participants = sb.participants.filter((p) => p !== msg.participant);
        const pc = sb.p2p.get(msg.participant);
        if (pc) pc.close();
        sb.p2p.delete(msg.participant);
        break;
      }
      case 'rtc.track_published':
        sb.tracks[msg.track.id] = msg.track;
        break;
      case 'rtc.signal':
        await onSignal(msg.from, msg.data);
        break;
      case 'rtc.mode':
        if (msg.mode === 'sfu' && sb.mode !== 'sfu') {
          sb.mode = 'sfu';
          await startSfu(msg.offer);
        }
        break;
      default:
        break;
    }
  }

  function newPc(name) {
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: policy });
    sb.states[name] = pc.connectionState;
    pc.addEventListener('connectionstatechange', () => {
      sb.states[name] = pc.connectionState;
      closeP2pOnceSfuIsUp();
    });
    pc.addEventListener('track', (e) => {
      if (e.track.kind === 'video') {
        const v = document.createElement('video');
        v.muted = true;
        v.autoplay = true;
        v.playsInline = true;
        v.srcObject = new MediaStream([e.track]);
        document.getElementById('videos').appendChild(v);
      }
    });
    return pc;
  }

  // --- SFU: subscriber (server offers) and publisher (we offer) ----------

  async function startSfu(offer) {
    const sub = (sb.sub = newPc('sub'));
    sub.addEventListener('track', (e) => {
      // a=msid:<participant> <track id>
      if (e.streams[0]) trackOwner[e.track.id] = e.streams[0].id;
    });
    sub.addEventListener('datachannel', (e) => sb.dataChannels.push(e.channel.label));
    await answerSubscriber(offer);
    await publish();
  }

  async function answerSubscriber(sdp) {
    const sub = sb.sub;
    await sub.setRemoteDescription({ type: 'offer', sdp });
    await sub.setLocalDescription(await sub.createAnswer());
    await rpc('rtc.answer', { room: sb.room, sdp: sub.localDescription.sdp });
  }

  async function publish() {
    const pub = (sb.pub = newPc('pub'));
    const [audio] = local.getAudioTracks();
    const [video] = local.getVideoTracks();
    const ta = pub.addTransceiver(audio, { direction: 'sendonly', streams: [local] });
    const init = { direction: 'sendonly', streams: [local] };
    if (simulcast) {
      init.sendEncodings = [
        { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
        { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
        { rid: 'f', maxBitrate: 1200000 },
      ];
    }
    const tv = pub.addTransceiver(video, init);
    await pub.setLocalDescription(await pub.createOffer());
    const res = await rpc('rtc.publish', {
      room: sb.room,
      sdp: pub.localDescription.sdp,
      sources: { [ta.mid]: 'microphone', [tv.mid]: 'camera' },
      sizes: { [tv.mid]: [640, 360] },
    });
    await pub.setRemoteDescription({ type: 'answer', sdp: res.sdp });
  }

  // After a switch to the SFU, the peer-to-peer connections close once both
  // SFU peers are connected.
  function closeP2pOnceSfuIsUp() {
    if (sb.mode !== 'sfu' || sb.p2p.size === 0) return;
    if (sb.sub?.connectionState !== 'connected' || sb.pub?.connectionState !== 'connected') return;
    for (const pc of sb.p2p.values()) pc.close();
    sb.p2p.clear();
  }

  // --- peer to peer: rtc.signal relays {description} / {candidate} -------

  function signal(to, data) {
    return rpc('rtc.signal', { room: sb.room, to, data }).catch((e) => {
      // Late candidates after a switch to the SFU are refused (107): harmless.
      if (sb.mode === 'p2p') sb.errors.push(`rtc.signal to ${to}: ${JSON.stringify(e)}`);
    });
  }

  function p2pPc(peer) {
    let pc = sb.p2p.get(peer);
    if (pc) return pc;
    pc = newPc(`p2p:${peer}`);
    pc.pendingCandidates = [];
    for (const t of local.getTracks()) pc.addTrack(t, local);
    pc.addEventListener('icecandidate', (e) => {
      if (e.candidate) signal(peer, { candidate: e.candidate.toJSON() });
    });
    pc.addEventListener('track', (e) => {
      trackOwner[e.track.id] = peer;
    });
    sb.p2p.set(peer, pc);
    return pc;
  }

  async function offerP2p(peer) {
    const pc = p2pPc(peer);
    await pc.setLocalDescription(await pc.createOffer());
    await signal(peer, { description: { type: 'offer', sdp: pc.localDescription.sdp } });
  }

  async function onSignal(from, data) {
    if (sb.mode !== 'p2p') return; // stale: the room moved to the SFU
    const pc = p2pPc(from);
    if (data.description) {
      await pc.setRemoteDescription(data.description);
      if (data.description.type === 'offer') {
        await pc.setLocalDescription(await pc.createAnswer());
        await signal(from, { description: { type: 'answer', sdp: pc.localDescription.sdp } });
      }
      for (const c of pc.pendingCandidates.splice(0)) await pc.addIceCandidate(c);
    } else if (data.candidate) {
      if (pc.remoteDescription) await pc.addIceCandidate(data.candidate);
      else pc.pendingCandidates.push(data.candidate);
    }
  }

  // --- what the tests read ----------------------------------------------

  function connections() {
    const list = [];
    if (sb.sub) list.push({ name: 'sub', via: 'sfu', pc: sb.sub });
    if (sb.pub) list.push({ name: 'pub', via: 'sfu', pc: sb.pub });
    for (const [peer, pc] of sb.p2p) list.push({ name: `p2p:${peer}`, via: 'p2p', pc, peer });
    return list;
  }

  // What this page receives, per sending participant and path:
  // {<participant>: {sfu?: {framesDecoded, videoBytes, audioBytes}, p2p?: {…}}}.
  sb.inboundStats = async () => {
    const out = {};
    for (const { via, pc, peer } of connections()) {
      if (via === 'sfu' && pc !== sb.sub) continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp' || !s.trackIdentifier) return; // skip Chrome's unsignaled placeholder
        const owner = peer || sb.tracks[s.trackIdentifier]?.participant || trackOwner[s.trackIdentifier] || '?';
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
})();
