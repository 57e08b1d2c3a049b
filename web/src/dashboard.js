// The operator dashboard: live charts from the `$switchboard:stats` channel
// (one snapshot per second from the node), lists of rooms, channels and
// nodes from the server API, and the actions "disconnect a user" and "end a
// room". The admin signs in through the built-in OAuth login; the server API
// accepts the access token of a user listed in `auth.admin_users`.
import uPlot from 'uplot';
import { Switchboard, defaultTransports } from '/sdk/switchboard.js';
import { Auth } from './auth.js';
import './dashboard.css';

const $ = (id) => document.getElementById(id);
const WINDOW = 120; // points kept (seconds)
const LIST_EVERY = 5000;

const auth = new Auth('/dashboard');
let statsChannel = '$switchboard:stats';
let lastSnapshot = 0;

function fatal(message) {
  const el = $('fatal');
  el.textContent = message;
  el.hidden = false;
}

let toastTimer = null;
function toast(text) {
  clearTimeout(toastTimer);
  $('toast-text').textContent = text;
  $('toast').hidden = false;
  toastTimer = setTimeout(() => ($('toast').hidden = true), 5000);
}

function setStatus(text, kind) {
  const el = $('conn-status');
  el.textContent = text;
  el.className = `status-pill ${kind || ''}`;
}

class NotAdmin extends Error {}

/** Calls the server API with the admin's access token. */
async function api(method, body = {}) {
  const token = await auth.accessToken();
  const r = await fetch(`/api/${method}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (r.status === 401) {
    throw new NotAdmin('The server API refused this account: it is not an administrator (list the username in auth.admin_users).');
  }
  const reply = await r.json().catch(() => ({}));
  if (!r.ok || reply.error) {
    const e = reply.error;
    throw new Error(e ? `${e.message || 'error'} (code ${e.code})` : `HTTP ${r.status}`);
  }
  return reply.result;
}

// ---------- charts ----------

const fmtInt = (v) => (v == null ? '–' : Math.round(v).toLocaleString());
const fmtRate = (v) => (v == null ? '–' : v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString());
const fmtMs = (v) => (v == null ? '–' : `${v < 10 ? v.toFixed(2) : Math.round(v)} ms`);
const fmtKbps = (v) => (v == null ? '–' : `${Math.round(v / 1000).toLocaleString()} kb/s`);
const fmtPct = (v) => (v == null ? '–' : `${v.toFixed(1)} %`);

// Colour-blind-safe palette (Okabe–Ito).
const C = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00'];

const CHARTS = [
  { id: 'conn', title: 'Connections and subscriptions', series: [['Connections', (s) => s.connections], ['Subscriptions', (s) => s.subscriptions]], fmt: fmtInt, floor: 4 },
  { id: 'msgs', title: 'Messages per second', series: [['In (commands)', (s) => s.messages_in], ['Out (deliveries)', (s) => s.messages_out], ['Publications', (s) => s.publications]], fmt: fmtRate, floor: 2 },
  { id: 'lat', title: 'Command latency (worst node)', series: [['p50', (s) => s.latency_ms.p50], ['p90', (s) => s.latency_ms.p90], ['p99', (s) => s.latency_ms.p99]], fmt: fmtMs, floor: 1 },
  { id: 'rooms', title: 'Rooms and participants', series: [['Rooms', (s) => s.rooms], ['Participants', (s) => s.participants]], fmt: fmtInt, floor: 4 },
  { id: 'bitrate', title: 'Media bitrate', series: [['Into the SFU', (s) => s.bitrate_in], ['Out of the SFU', (s) => s.bitrate_out]], fmt: fmtKbps, floor: 200000 },
  { id: 'loss', title: 'Packet loss', series: [['Mean', (s) => s.loss_avg], ['Worst participant', (s) => s.loss_max]], fmt: fmtPct, floor: 2 },
];

const NOW = [
  ['Nodes reporting', (s) => fmtInt(s.nodes)],
  ['Connections', (s) => fmtInt(s.connections)],
  ['Users', (s) => fmtInt(s.users)],
  ['Subscriptions', (s) => fmtInt(s.subscriptions)],
  ['Messages in /s', (s) => fmtRate(s.messages_in)],
  ['Messages out /s', (s) => fmtRate(s.messages_out)],
  ['Latency p99 (worst node)', (s) => fmtMs(s.latency_ms.p99)],
  ['Rooms', (s) => fmtInt(s.rooms)],
  ['Participants', (s) => fmtInt(s.participants)],
  ['Media in', (s) => fmtKbps(s.bitrate_in)],
  ['Packet loss', (s) => fmtPct(s.loss_avg)],
];

const plots = [];

function chartWidth(el) {
  return Math.max(240, Math.floor(el.clientWidth));
}

function makeCharts() {
  const host = $('charts');
  for (const def of CHARTS) {
    const box = document.createElement('figure');
    box.className = 'chart';
    box.id = `chart-${def.id}`;
    const title = document.createElement('h3');
    title.id = `chart-${def.id}-title`;
    title.textContent = def.title;
    box.setAttribute('aria-labelledby', title.id);
    const plotEl = document.createElement('div');
    plotEl.className = 'plot';
    plotEl.setAttribute('role', 'img');
    plotEl.setAttribute('aria-label', `${def.title}: waiting for data`);
    box.append(title, plotEl);
    host.append(box);
    const data = [[], ...def.series.map(() => [])];
    const opts = {
      width: chartWidth(box) - 12,
      height: 180,
      scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 30), max] }, y: { range: (u, min, max) => [0, Math.max((max || 0) * 1.2, def.floor)] } },
      series: [
        {},
        ...def.series.map(([label], i) => ({
          label,
          stroke: C[i],
          width: 2,
          spanGaps: false,
          value: (u, v) => def.fmt(v),
        })),
      ],
      axes: [{}, { size: 84, values: (u, ticks) => ticks.map((t) => def.fmt(t)) }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    };
    const plot = new uPlot(opts, data, plotEl);
    plots.push({ def, plot, data, box, plotEl });
  }
  const ro = new ResizeObserver(() => {
    for (const p of plots) p.plot.setSize({ width: chartWidth(p.box) - 12, height: 180 });
  });
  for (const p of plots) ro.observe(p.box);
}

function renderNow(s) {
  const dl = $('now');
  if (!dl.children.length) {
    for (const [label] of NOW) {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = label;
      const dd = document.createElement('dd');
      div.append(dt, dd);
      dl.append(div);
    }
  }
  NOW.forEach(([, get], i) => {
    dl.children[i].querySelector('dd').textContent = get(s);
  });
}

// Every node publishes its own snapshot to the channel each second; the
// charts show the cluster: sums, the worst node's latency and loss.
const latest = new Map(); // node name → { at, s }
const STALE = 3000;

function onNodeSnapshot(s) {
  lastSnapshot = Date.now();
  latest.set(s.node, { at: lastSnapshot, s });
}

function clusterSnapshot() {
  const now = Date.now();
  const live = [];
  for (const [node, e] of latest) {
    if (now - e.at > STALE) latest.delete(node);
    else live.push(e.s);
  }
  if (!live.length) return null;
  const sum = (f) => live.reduce((a, s) => a + (f(s) || 0), 0);
  const max = (f) => {
    const v = live.map(f).filter((x) => x != null);
    return v.length ? Math.max(...v) : null;
  };
  return {
    nodes: live.length,
    time: Math.max(...live.map((s) => s.time)),
    connections: sum((s) => s.connections),
    users: sum((s) => s.users),
    subscriptions: sum((s) => s.subscriptions),
    messages_in: sum((s) => s.messages_in),
    messages_out: sum((s) => s.messages_out),
    publications: sum((s) => s.publications),
    latency_ms: { p50: max((s) => s.latency_ms.p50), p90: max((s) => s.latency_ms.p90), p99: max((s) => s.latency_ms.p99) },
    rooms: sum((s) => s.rooms),
    participants: sum((s) => s.participants),
    bitrate_in: sum((s) => s.bitrate_in),
    bitrate_out: sum((s) => s.bitrate_out),
    loss_avg: sum((s) => s.loss_avg) / live.length,
    loss_max: max((s) => s.loss_max),
  };
}

let lastPushed = 0;
setInterval(() => {
  const s = clusterSnapshot();
  if (!s || s.time === lastPushed) return;
  lastPushed = s.time;
  onSnapshot(s);
}, 1000);

function onSnapshot(s) {
  renderNow(s);
  const t = s.time / 1000;
  for (const p of plots) {
    p.data[0].push(t);
    p.def.series.forEach(([, get], i) => p.data[i + 1].push(get(s) ?? null));
    if (p.data[0].length > WINDOW) for (const col of p.data) col.shift();
    p.plot.setData(p.data);
    const summary = p.def.series.map(([label, get]) => `${label} ${p.def.fmt(get(s))}`).join(', ');
    p.plotEl.setAttribute('aria-label', `${p.def.title}, latest: ${summary}`);
  }
}

setInterval(() => {
  if (!lastSnapshot) return;
  const age = Math.round((Date.now() - lastSnapshot) / 1000);
  $('stats-age').textContent = age > 3 ? `(no update for ${age} s)` : '';
}, 1000);

// ---------- lists and actions ----------

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fmtUptime(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

async function refreshLists() {
  const jobs = [
    api('info').then((r) => {
      const body = $('nodes');
      body.replaceChildren();
      for (const n of r.nodes || []) {
        const tr = document.createElement('tr');
        tr.append(cell(n.name), cell(n.version), cell(fmtInt(n.num_clients), 'num'), cell(fmtInt(n.num_users), 'num'), cell(fmtInt(n.num_channels), 'num'), cell(fmtUptime(n.uptime || 0)));
        body.append(tr);
      }
    }),
    api('channels').then((r) => {
      const body = $('channels');
      body.replaceChildren();
      const rows = Object.entries(r.channels || {}).sort((a, b) => b[1].num_clients - a[1].num_clients || a[0].localeCompare(b[0]));
      for (const [name, info] of rows.slice(0, 100)) {
        const tr = document.createElement('tr');
        tr.append(cell(name), cell(fmtInt(info.num_clients), 'num'));
        body.append(tr);
      }
    }),
    api('room_list').then((r) => {
      const body = $('rooms');
      body.replaceChildren();
      const rooms = (r.rooms || []).sort((a, b) => a.room.localeCompare(b.room));
      $('rooms-empty').hidden = rooms.length > 0;
      for (const room of rooms) {
        const tr = document.createElement('tr');
        const td = document.createElement('td');
        const btn = document.createElement('button');
        btn.type = 'button';
        btn.className = 'danger';
        btn.textContent = 'End';
        btn.setAttribute('aria-label', `End room ${room.room}`);
        btn.onclick = () => endRoom(room.room);
        td.append(btn);
        tr.append(cell(room.room), cell(room.transport || room.mode), cell(fmtInt(room.num_participants), 'num'), td);
        body.append(tr);
      }
    }),
    api('user_list').then((r) => {
      const list = $('user-names');
      list.replaceChildren();
      for (const u of r.users || []) {
        const o = document.createElement('option');
        o.value = u.username;
        list.append(o);
      }
      usersByName = new Map((r.users || []).map((u) => [u.username.toLowerCase(), u.id]));
    }),
  ];
  const results = await Promise.allSettled(jobs);
  for (const r of results) {
    if (r.status === 'rejected') {
      if (r.reason instanceof NotAdmin) throw r.reason;
      console.warn(r.reason);
    }
  }
}

let usersByName = new Map();

async function endRoom(name) {
  if (!confirm(`End room "${name}" for everyone in it?`)) return;
  try {
    await api('room_delete', { room: name });
    toast(`Room ${name} ended.`);
  } catch (e) {
    toast(`Could not end ${name}: ${e.message}`);
  }
  refreshLists().catch(() => {});
}

async function disconnectUser(e) {
  e.preventDefault();
  const input = $('disconnect-user');
  const given = input.value.trim();
  if (!given) return;
  const user = usersByName.get(given.toLowerCase()) || given;
  try {
    await api('disconnect', { user });
    toast(`Disconnected ${given}.`);
    input.value = '';
  } catch (err) {
    toast(`Could not disconnect ${given}: ${err.message}`);
  }
  refreshLists().catch(() => {});
}

// ---------- start ----------

async function start() {
  try {
    const cfg = await auth.init();
    statsChannel = cfg.stats_channel || statsChannel;
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
  $('signout').onclick = async () => {
    await auth.signOut();
    location.assign('/dashboard');
  };
  if (!auth.signedIn) {
    $('signin').hidden = false;
    return;
  }
  $('whoami').textContent = `Signed in as ${auth.user.username}`;
  $('whoami').hidden = false;
  $('signout').hidden = false;
  try {
    await refreshLists();
  } catch (e) {
    fatal(e.message);
    return;
  }
  $('dash').hidden = false;
  makeCharts();
  $('disconnect-form').addEventListener('submit', disconnectUser);
  setInterval(() => refreshLists().catch((e) => toast(e.message)), LIST_EVERY);

  const sb = new Switchboard(defaultTransports(), {}, {
    getToken: () => auth.accessToken(),
  });
  const c = sb.centrifuge;
  c.on('connecting', () => setStatus('connecting…'));
  c.on('connected', () => setStatus('live', 'ok'));
  c.on('disconnected', (ctx) => setStatus(`disconnected: ${ctx.reason}`, 'bad'));
  const sub = c.newSubscription(statsChannel);
  sub.on('publication', (ctx) => onNodeSnapshot(ctx.data));
  sub.on('error', (ctx) => toast(`Stats channel: ${ctx.error?.message || ctx.type}`));
  sub.on('unsubscribed', (ctx) => {
    if (ctx.code !== 0) fatal(`The stats channel refused this account (${ctx.reason}): it needs a subscribe grant for ${statsChannel}.`);
  });
  sub.subscribe();
  c.connect();
}

start();
