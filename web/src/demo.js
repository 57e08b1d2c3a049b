// The Switchboard demo app: sign in (built-in OAuth, PKCE), pick or create a
// room, video grid with active speaker and connection quality, mute /
// camera / screen share, chat with history and typing indicator, people
// online (channel presence) and 1:1 calls. Everything runs on one
// connection of the browser SDK (served by the server at /sdk/switchboard.js).
import { Switchboard, defaultTransports } from '/sdk/switchboard.js';
import { Auth } from './auth.js';
import './demo.css';

const $ = (id) => document.getElementById(id);
const LOBBY = 'lobby';
const TYPING_SEND_EVERY = 2000;
const TYPING_SHOW_FOR = 3500;

const auth = new Auth('/');
/** @type {Switchboard} */
let sb = null;
let me = { id: '', username: '' };
let lobbySub = null;
/** user id → { name, conns } from the lobby's presence. */
const online = new Map();
const recentRooms = [];

// The current room and what this page publishes in it.
let room = null;
let roomTitle = '';
let local = { cam: null, mic: null, screen: null };
let chatSub = null;
let typingSub = null;
let lastTypingSent = 0;
const typers = new Map();
let outgoing = null;
let incoming = null;

// ---------- small UI helpers ----------

function show(id, visible) {
  $(id).hidden = !visible;
}

function fatal(message) {
  const el = $('fatal');
  el.textContent = message;
  el.hidden = false;
}

let toastTimer = null;
function toast(text, { action = null, actionLabel = 'Cancel', sticky = false } = {}) {
  clearTimeout(toastTimer);
  $('toast-text').textContent = text;
  const btn = $('toast-action');
  btn.hidden = !action;
  btn.textContent = actionLabel;
  btn.onclick = action;
  $('toast').hidden = false;
  if (!sticky) toastTimer = setTimeout(hideToast, 5000);
}

function hideToast() {
  $('toast').hidden = true;
}

function nameOf(userId) {
  if (!userId) return 'someone';
  if (userId === me.id) return me.username;
  return online.get(userId)?.name || userId;
}

function setStatus(text, kind) {
  const el = $('conn-status');
  el.textContent = text;
  el.className = `status-pill ${kind || ''}`;
}

// ---------- sign-in and connection ----------

async function start() {
  try {
    await auth.init();
  } catch (e) {
    fatal(e.message);
    return;
  }
  try {
    await auth.handleRedirect();
  } catch (e) {
    fatal(e.message);
  }
  $('signin-button').onclick = () => auth.signIn();
  $('signout').onclick = signOut;
  if (!auth.signedIn) {
    show('signin', true);
    return;
  }
  me = auth.user;
  $('whoami').textContent = `Signed in as ${me.username}`;
  show('whoami', true);
  show('signout', true);
  show('app', true);
  connect();
}

async function signOut() {
  if (room) await room.leave().catch(() => {});
  sb?.disconnect();
  await auth.signOut();
  location.assign('/');
}

function connect() {
  sb = new Switchboard(defaultTransports(), {}, {
    getToken: async () => {
      try {
        return await auth.accessToken();
      } catch (e) {
        fatal(`Your session ended (${e.message}). Sign in again.`);
        show('signin', true);
        show('app', false);
        throw e;
      }
    },
  });
  const c = sb.centrifuge;
  c.on('connecting', () => setStatus('connecting…'));
  c.on('connected', () => setStatus('connected', 'ok'));
  c.on('disconnected', (ctx) => setStatus(`disconnected: ${ctx.reason}`, 'bad'));
  sb.on('ring', onRing);
  subscribeLobby();
  wireControls();
  sb.connect();
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('room');
  if (fromHash) enterRoom(fromHash);
}

// ---------- lobby: people online (presence) and recent rooms (history) ----------

function subscribeLobby() {
  lobbySub = sb.centrifuge.newSubscription(LOBBY, { joinLeave: true });
  lobbySub.on('subscribed', async () => {
    try {
      const { clients } = await lobbySub.presence();
      online.clear();
      for (const info of Object.values(clients)) addOnline(info);
      renderPeople();
    } catch (e) {
      toast(`Presence unavailable: ${e.message}`);
    }
    try {
      const { publications } = await lobbySub.history({ limit: 50, reverse: true });
      for (const p of publications.reverse()) noteRoom(p.data);
    } catch {
      // History is a convenience here: without it the list starts empty.
    }
  });
  lobbySub.on('join', (ctx) => {
    addOnline(ctx.info);
    renderPeople();
  });
  lobbySub.on('leave', (ctx) => {
    const entry = online.get(ctx.info.user);
    if (entry && --entry.conns <= 0) online.delete(ctx.info.user);
    renderPeople();
  });
  lobbySub.on('publication', (ctx) => noteRoom(ctx.data));
  lobbySub.subscribe();
}

function addOnline(info) {
  const entry = online.get(info.user) || { name: info.connInfo?.username || info.user, conns: 0 };
  entry.conns += 1;
  online.set(info.user, entry);
}

function renderPeople() {
  const list = $('people');
  list.replaceChildren();
  const people = [...online.entries()].sort((a, b) => a[1].name.localeCompare(b[1].name));
  $('people-count').textContent = `(${people.length})`;
  for (const [id, { name }] of people) {
    const li = document.createElement('li');
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.setAttribute('aria-hidden', 'true');
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = id === me.id ? `${name} (you)` : name;
    li.append(dot, label);
    if (id !== me.id) {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.textContent = 'Call';
      btn.setAttribute('aria-label', `Call ${name}`);
      btn.disabled = !!outgoing;
      btn.onclick = () => placeCall(id);
      li.append(btn);
    }
    list.append(li);
  }
  // Names may have arrived after tiles were drawn.
  for (const tile of document.querySelectorAll('.tile[data-user]')) {
    setTileName(tile, tile.dataset.user);
  }
}

function noteRoom(data) {
  if (!data || data.type !== 'room' || typeof data.room !== 'string') return;
  const i = recentRooms.indexOf(data.room);
  if (i >= 0) recentRooms.splice(i, 1);
  recentRooms.unshift(data.room);
  recentRooms.length = Math.min(recentRooms.length, 12);
  const list = $('recent-rooms');
  list.replaceChildren();
  for (const name of recentRooms) {
    const li = document.createElement('li');
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.textContent = name;
    btn.setAttribute('aria-label', `Join room ${name}`);
    btn.onclick = () => enterRoom(name);
    li.append(btn);
    list.append(li);
  }
  show('no-rooms', recentRooms.length === 0);
}

// ---------- rooms ----------

function wireControls() {
  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('room-name').value.trim();
    if (name) enterRoom(name);
  });
  $('mic').onclick = toggleMic;
  $('cam').onclick = toggleCam;
  $('screen').onclick = toggleScreen;
  $('leave').onclick = () => room?.leave();
  $('chat-form').addEventListener('submit', sendChat);
  $('chat-input').addEventListener('input', sendTyping);
}

async function enterRoom(name) {
  if (room) await room.leave().catch(() => {});
  lobbySub?.publish({ type: 'room', room: name }).catch(() => {});
  const r = sb.room(name);
  attachRoom(r, name);
  try {
    await r.join();
  } catch (e) {
    toast(`Could not join ${name}: ${e.message}`);
    leaveUi();
    return;
  }
  await publishMedia(r);
}

/** Shows a room (joined or about to be) and follows its events. */
function attachRoom(r, title) {
  room = r;
  roomTitle = title;
  local = { cam: null, mic: null, screen: null };
  $('room-title').textContent = title;
  $('grid').replaceChildren();
  $('media-note').textContent = '';
  history.replaceState(null, '', r.name.startsWith('call') ? location.pathname : `#room=${encodeURIComponent(r.name)}`);
  show('lobby', false);
  show('room', true);
  show('chat', true);
  ensureTile('local', me.id, 'camera', true);
  updateButtons();
  setMode(r.mode);

  r.on('participantJoined', (p) => ensureTile(p.id, p.user, 'camera'));
  r.on('participantLeft', (p) => {
    removeTile(p.id, 'camera');
    removeTile(p.id, 'screen');
  });
  r.on('trackPublished', (t) => ensureTile(t.participant, userOf(t.participant), t.source === 'screen' ? 'screen' : 'camera'));
  r.on('trackSubscribed', renderTrack);
  r.on('trackUnpublished', (t) => {
    // After a P2P → SFU switch the SFU copy of a track may already play in
    // the tile when the P2P copy goes: only remove what shows this track.
    if (t.source === 'screen') {
      const v = tileOf(t.participant, 'screen')?.querySelector('video');
      if (!v || v.dataset.key === t.key) removeTile(t.participant, 'screen');
    } else if (t.kind === 'video') {
      const v = tileOf(t.participant, 'camera')?.querySelector('video');
      if (v && v.dataset.key === t.key) v.remove();
      refreshPlaceholder(t.participant, 'camera');
    } else {
      document.querySelector(`audio[data-key="${CSS.escape(t.key)}"]`)?.remove();
    }
  });
  r.on('trackMuted', (t, muted) => {
    if ('participant' in t) {
      const tile = tileOf(t.participant, t.source === 'screen' ? 'screen' : 'camera');
      if (!tile) return;
      if (t.kind === 'audio') tile.querySelector('.muted-icon').hidden = !muted;
      else refreshPlaceholder(t.participant, 'camera');
    } else {
      updateButtons();
    }
  });
  r.on('activeSpeakers', (speakers) => {
    const top = speakers.find((s) => s.level > 0);
    for (const tile of document.querySelectorAll('.tile')) {
      const pid = tile.dataset.participant === 'local' ? r.participant : tile.dataset.participant;
      tile.classList.toggle('speaking', !!top && top.participant === pid && tile.dataset.source === 'camera');
    }
  });
  r.on('quality', (participant, q) => {
    const pid = participant === r.participant ? 'local' : participant;
    const badge = tileOf(pid, 'camera')?.querySelector('.badge');
    if (!badge) return;
    badge.textContent = q;
    badge.className = `badge ${q}`;
    badge.title = `Connection quality: ${q}`;
    badge.hidden = false;
  });
  r.on('modeChanged', setMode);
  r.on('joined', () => {
    setMode(r.mode);
    for (const p of r.participants.values()) ensureTile(p.id, p.user, 'camera');
  });
  r.on('reconnecting', () => ($('media-note').textContent = 'Connection lost: rejoining…'));
  r.on('reconnected', () => ($('media-note').textContent = 'Rejoined.'));
  r.on('localTrackUnpublished', (t) => {
    if (t === local.screen) {
      local.screen = null;
      updateButtons();
    }
  });
  r.on('error', (e) => console.warn('room error', e));
  r.on('closed', (reason) => {
    if (room !== r) return;
    leaveUi();
    if (reason !== 'left') toast(reason === 'ended' ? 'The room was ended.' : `You left the room (${reason}).`);
  });
  // A room joined already (an answered call) has participants and tracks.
  for (const p of r.participants.values()) ensureTile(p.id, p.user, 'camera');
  for (const t of r.tracks) {
    ensureTile(t.participant, userOf(t.participant), t.source === 'screen' ? 'screen' : 'camera');
    if (t.mediaTrack) renderTrack(t);
  }
  subscribeChat(r.name);
}

function userOf(participantId) {
  return room?.participants.get(participantId)?.user || null;
}

function setMode(mode) {
  const el = $('room-mode');
  el.textContent = mode === 'p2p' ? 'peer to peer' : mode.toUpperCase();
  el.title = mode === 'p2p' ? 'Media goes straight between the two browsers' : 'Media goes through the SFU';
}

async function publishMedia(r) {
  const problems = [];
  try {
    local.cam = await r.publishCamera({ simulcast: true });
    const v = document.createElement('video');
    v.muted = true;
    v.autoplay = true;
    v.playsInline = true;
    v.setAttribute('aria-label', 'Your camera');
    v.srcObject = new MediaStream([local.cam.mediaTrack]);
    tileOf('local', 'camera')?.prepend(v);
    refreshPlaceholder('local', 'camera');
  } catch (e) {
    problems.push(`camera: ${e.message}`);
  }
  try {
    local.mic = await r.publishMicrophone();
  } catch (e) {
    problems.push(`microphone: ${e.message}`);
  }
  if (problems.length) $('media-note').textContent = `Joined without ${problems.join('; ')}`;
  updateButtons();
}

function leaveUi() {
  room = null;
  chatSub?.unsubscribe();
  typingSub?.unsubscribe();
  if (chatSub) sb.centrifuge.removeSubscription(chatSub);
  if (typingSub) sb.centrifuge.removeSubscription(typingSub);
  chatSub = typingSub = null;
  $('grid').replaceChildren();
  for (const a of document.querySelectorAll('audio[data-key]')) a.remove();
  show('room', false);
  show('chat', false);
  show('lobby', true);
  history.replaceState(null, '', location.pathname);
}

function tileOf(participant, source) {
  return document.querySelector(`.tile[data-participant="${CSS.escape(participant)}"][data-source="${source}"]`);
}

function setTileName(tile, userId) {
  const base = tile.dataset.participant === 'local' ? `${me.username} (you)` : nameOf(userId);
  const name = tile.dataset.source === 'screen' ? `${base}: screen` : base;
  tile.querySelector('.label').textContent = name;
  tile.querySelector('.placeholder').textContent = (nameOf(userId) || '?').slice(0, 1).toUpperCase();
  tile.setAttribute('aria-label', name);
  const video = tile.querySelector('video');
  if (video && tile.dataset.participant !== 'local') video.setAttribute('aria-label', `${nameOf(userId)}'s ${tile.dataset.source}`);
}

function ensureTile(participant, userId, source, isLocal = false) {
  userId ||= isLocal ? me.id : userOf(participant);
  let tile = tileOf(participant, source);
  if (tile) {
    if (userId && !tile.dataset.user) {
      tile.dataset.user = userId;
      setTileName(tile, userId);
    }
    return tile;
  }
  tile = document.createElement('figure');
  tile.className = `tile ${source}`;
  tile.dataset.participant = participant;
  tile.dataset.source = source;
  if (userId) tile.dataset.user = userId;
  tile.innerHTML = '<div class="placeholder" aria-hidden="true"></div><figcaption class="label"></figcaption><span class="badge" hidden></span><span class="muted-icon" hidden>muted</span>';
  setTileName(tile, isLocal ? me.id : userId);
  $('grid').append(tile);
  return tile;
}

function removeTile(participant, source) {
  tileOf(participant, source)?.remove();
  if (source === 'camera') {
    for (const a of document.querySelectorAll(`audio[data-participant="${CSS.escape(participant)}"]`)) a.remove();
  }
}

function refreshPlaceholder(participant, source) {
  const tile = tileOf(participant, source);
  if (!tile) return;
  const video = tile.querySelector('video');
  let off = !video;
  if (participant === 'local') off = !local.cam || local.cam.muted;
  else if (video) {
    const t = room?.tracks.find((x) => x.participant === participant && x.kind === 'video' && (x.source === 'screen') === (source === 'screen'));
    off = !t || t.muted;
  }
  tile.querySelector('.placeholder').hidden = !off;
  if (video) video.hidden = off;
}

function renderTrack(track) {
  if (track.kind === 'audio') {
    const key = track.key;
    let a = document.querySelector(`audio[data-key="${CSS.escape(key)}"]`);
    if (!a) {
      a = document.createElement('audio');
      a.autoplay = true;
      a.dataset.key = key;
      a.dataset.participant = track.participant;
      document.body.append(a);
    }
    track.attach(a);
    const tile = tileOf(track.participant, 'camera');
    if (tile) tile.querySelector('.muted-icon').hidden = !track.muted;
    return;
  }
  const source = track.source === 'screen' ? 'screen' : 'camera';
  const tile = ensureTile(track.participant, userOf(track.participant), source);
  let v = tile.querySelector('video');
  if (!v) {
    v = document.createElement('video');
    v.autoplay = true;
    v.playsInline = true;
    v.muted = true; // audio plays through its own element
    tile.prepend(v);
  }
  // The participant's user may come later (joined event): setTileName then relabels.
  v.setAttribute('aria-label', `${nameOf(tile.dataset.user || userOf(track.participant))}'s ${source}`);
  v.dataset.key = track.key;
  track.attach(v);
  refreshPlaceholder(track.participant, source);
  // Ask the SFU for no more than the tile's size (it picks the simulcast layer).
  const rect = tile.getBoundingClientRect();
  room?.setSubscription(track, { maxSize: [Math.round(rect.width) || 640, Math.round(rect.height) || 360] }).catch(() => {});
}

function updateButtons() {
  const set = (id, pressed, label, disabled = false) => {
    const b = $(id);
    b.setAttribute('aria-pressed', String(pressed));
    b.textContent = label;
    b.disabled = disabled;
  };
  const micMuted = !local.mic || local.mic.muted;
  set('mic', micMuted, local.mic ? (micMuted ? 'Unmute microphone' : 'Mute microphone') : 'Turn microphone on');
  const camOff = !local.cam || local.cam.muted;
  set('cam', camOff, local.cam ? (camOff ? 'Turn camera on' : 'Turn camera off') : 'Turn camera on');
  set('screen', !!local.screen, local.screen ? 'Stop sharing' : 'Share screen');
  refreshPlaceholder('local', 'camera');
}

async function toggleMic() {
  if (!room) return;
  try {
    if (!local.mic) local.mic = await room.publishMicrophone();
    else await room.mute(local.mic, !local.mic.muted);
  } catch (e) {
    toast(`Microphone: ${e.message}`);
  }
  updateButtons();
}

async function toggleCam() {
  if (!room) return;
  try {
    if (!local.cam) {
      await publishMedia(room);
    } else {
      await room.mute(local.cam, !local.cam.muted);
    }
  } catch (e) {
    toast(`Camera: ${e.message}`);
  }
  updateButtons();
}

async function toggleScreen() {
  if (!room) return;
  try {
    if (local.screen) {
      const t = local.screen;
      local.screen = null;
      await room.unpublish(t);
      removeTile('local', 'screen');
    } else {
      local.screen = await room.publishScreen();
      const tile = ensureTile('local', me.id, 'screen', true);
      const v = document.createElement('video');
      v.muted = true;
      v.autoplay = true;
      v.playsInline = true;
      v.setAttribute('aria-label', 'Your shared screen');
      v.srcObject = new MediaStream([local.screen.mediaTrack]);
      tile.prepend(v);
      tile.querySelector('.placeholder').hidden = true;
      local.screen.mediaTrack.addEventListener('ended', () => removeTile('local', 'screen'));
    }
  } catch (e) {
    toast(`Screen sharing: ${e.message}`);
  }
  updateButtons();
}

// ---------- chat with history, typing indicator ----------

function subscribeChat(roomName) {
  $('messages').replaceChildren();
  $('typing').textContent = '';
  typers.clear();
  const seen = new Set();
  let buffered = [];
  chatSub = sb.centrifuge.newSubscription(`chat:${roomName}`);
  chatSub.on('publication', (ctx) => {
    if (buffered) buffered.push(ctx);
    else addMessage(ctx, seen);
  });
  chatSub.on('subscribed', async () => {
    buffered = buffered || [];
    try {
      const { publications } = await chatSub.history({ limit: 50, reverse: true });
      $('messages').replaceChildren();
      seen.clear();
      for (const p of publications.reverse()) addMessage(p, seen);
    } catch (e) {
      addNote(`History unavailable: ${e.message}`);
    }
    for (const ctx of buffered) addMessage(ctx, seen);
    buffered = null;
  });
  chatSub.on('error', (ctx) => addNote(`Chat error: ${ctx.error?.message || ctx.type}`));
  chatSub.subscribe();

  typingSub = sb.centrifuge.newSubscription(`typing:${roomName}`);
  typingSub.on('publication', (ctx) => {
    const user = ctx.info?.user;
    if (!user || user === me.id) return;
    const name = ctx.info?.connInfo?.username || nameOf(user);
    clearTimeout(typers.get(name));
    typers.set(name, setTimeout(() => {
      typers.delete(name);
      renderTyping();
    }, TYPING_SHOW_FOR));
    renderTyping();
  });
  typingSub.subscribe();
}

function renderTyping() {
  const names = [...typers.keys()];
  $('typing').textContent =
    names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
}

function addNote(text) {
  const li = document.createElement('li');
  li.className = 'muted';
  li.textContent = text;
  $('messages').append(li);
}

function addMessage(ctx, seen) {
  if (ctx.offset && seen.has(ctx.offset)) return;
  if (ctx.offset) seen.add(ctx.offset);
  const text = typeof ctx.data?.text === 'string' ? ctx.data.text : null;
  if (text === null) return;
  const from = ctx.info?.connInfo?.username || nameOf(ctx.info?.user);
  const li = document.createElement('li');
  if (ctx.info?.user === me.id) li.className = 'mine';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  const body = document.createElement('span');
  body.textContent = text;
  li.append(who, body);
  const list = $('messages');
  list.append(li);
  list.scrollTop = list.scrollHeight;
  const name = from;
  if (typers.has(name)) {
    clearTimeout(typers.get(name));
    typers.delete(name);
    renderTyping();
  }
}

async function sendChat(e) {
  e.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text || !chatSub) return;
  try {
    await chatSub.publish({ text });
    input.value = '';
    lastTypingSent = 0;
  } catch (err) {
    toast(`Message not sent: ${err.message}`);
  }
}

function sendTyping() {
  const now = Date.now();
  if (!typingSub || now - lastTypingSent < TYPING_SEND_EVERY || !$('chat-input').value) return;
  lastTypingSent = now;
  typingSub.publish({ typing: true }).catch(() => {});
}

// ---------- 1:1 calls ----------

async function placeCall(userId) {
  const name = nameOf(userId);
  if (room) await room.leave().catch(() => {});
  try {
    outgoing = await sb.call(userId, { from: me.username });
  } catch (e) {
    toast(`Could not call ${name}: ${e.message}`);
    return;
  }
  renderPeople();
  const call = outgoing;
  toast(`Calling ${name}…`, { sticky: true, action: () => call.cancel().catch(() => {}), actionLabel: 'Hang up' });
  const done = (text) => {
    if (outgoing === call) outgoing = null;
    renderPeople();
    if (text) toast(text);
    else hideToast();
  };
  call.on('accepted', async (r) => {
    done(null);
    if (!r) return;
    attachRoom(r, `Call with ${name}`);
    await publishMedia(r);
  });
  call.on('declined', () => done(`${name} declined the call.`));
  call.on('ended', (reason) => {
    const why = { timeout: 'did not answer', offline: 'is not online', error: 'could not be reached', cancelled: 'call cancelled' };
    done(reason === 'cancelled' ? 'Call cancelled.' : `${name} ${why[reason] || `(${reason})`}.`);
  });
}

function onRing(call) {
  incoming = call;
  const name = call.data?.from || nameOf(call.from.user);
  $('ring-text').textContent = `${name} is calling you.`;
  const dialog = $('ring-dialog');
  const close = () => {
    if (dialog.open) dialog.close();
    if (incoming === call) incoming = null;
  };
  $('ring-accept').onclick = async () => {
    close();
    if (room) await room.leave().catch(() => {});
    try {
      const r = await call.accept();
      attachRoom(r, `Call with ${name}`);
      await publishMedia(r);
    } catch (e) {
      toast(`Could not answer: ${e.message}`);
    }
  };
  $('ring-decline').onclick = () => {
    close();
    call.decline().catch(() => {});
  };
  call.on('ended', (reason) => {
    close();
    if (reason === 'cancelled' || reason === 'timeout') toast(`Missed call from ${name}.`);
  });
  // Escape closes the dialog: that is a decline, not a silent dismissal.
  dialog.oncancel = (e) => {
    e.preventDefault();
    $('ring-decline').click();
  };
  if (!dialog.open) dialog.showModal();
}

start();
