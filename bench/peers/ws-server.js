// Thin baseline for scripts/bench: a plain `ws` broadcast server.
//   ws://HOST:PORT/?channel=NAME  subscribes the connection to NAME
//   a text frame "NAME\nPAYLOAD"  broadcasts PAYLOAD to NAME's subscribers
// Usage: node ws-server.js [port] (default 9101), listens on 127.0.0.1.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9101);
const channels = new Map();
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  clientTracking: false,
});

wss.on('connection', (ws, req) => {
  const channel = new URL(req.url, 'http://localhost').searchParams.get('channel');
  if (channel) {
    let subs = channels.get(channel);
    if (!subs) channels.set(channel, (subs = new Set()));
    subs.add(ws);
    ws.on('close', () => {
      subs.delete(ws);
      if (subs.size === 0) channels.delete(channel);
    });
  }
  ws.on('message', (data) => {
    const nl = data.indexOf(10);
    if (nl < 0) return;
    const subs = channels.get(data.toString('utf8', 0, nl));
    if (!subs) return;
    const payload = data.subarray(nl + 1);
    for (const sub of subs) {
      if (sub.readyState === 1) sub.send(payload, { binary: false });
    }
  });
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`ws broadcast server on 127.0.0.1:${port}`));
