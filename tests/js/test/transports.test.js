// centrifuge-js over the bidirectional emulation transports (HTTP-streaming
// and SSE, commands through /emulation), falling back from a blocked
// WebSocket, and plain EventSource / fetch / WebSocket consumers of the
// unidirectional transports (no SDK).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { withServer, sleep } from '../lib/server.js';
import { enc, dec, connectClient, subscribe, nextEvent, collect, within, chan } from '../lib/client.js';

// A WebSocket that never connects, as behind a proxy that blocks upgrades:
// the socket errors and closes right after it is created.
class BlockedWebSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.binaryType = 'blob';
    setTimeout(() => {
      this.readyState = 3;
      if (this.onerror) this.onerror({ type: 'error', message: 'blocked' });
      if (this.onclose) this.onclose({ code: 1006, reason: '' });
    }, 5);
  }

  send() {
    throw new Error('WebSocket is blocked');
  }

  close() {}
}

// Client options forcing the given transports (in order).
function transportOptions(server, transports, extra = {}) {
  return {
    endpoint: transports.map((transport) => ({
      transport,
      endpoint: transport === 'websocket' ? server.wsUrl : `${server.httpUrl}/connection/${transport}`,
    })),
    websocket: BlockedWebSocket,
    emulationEndpoint: `${server.httpUrl}/emulation`,
    fetch: globalThis.fetch,
    readableStream: globalThis.ReadableStream,
    eventsource: EventSource,
    ...extra,
  };
}

// centrifuge-js sends protobuf over HTTP-streaming only (SSE is text).
const CASES = [
  { transport: 'http_stream', mode: 'json' },
  { transport: 'http_stream', mode: 'protobuf' },
  { transport: 'sse', mode: 'json' },
];

for (const { transport, mode } of CASES) {
  describe(`${transport} emulation [${mode}]`, () => {
    test('connect, subscribe, publish, presence and history', withServer({}, async (t, server) => {
      const alice = await connectClient(server, mode, transportOptions(server, [transport], { token: server.token('alice') }));
      assert.equal(alice.connectedCtx.transport, transport, `transport: ${JSON.stringify(alice.connectedCtx)}`);
      const bob = await connectClient(server, mode, transportOptions(server, [transport], { token: server.token('bob') }));
      const ch = chan('emu');
      const a = await subscribe(alice, ch);
      const b = await subscribe(bob, ch);
      assert.equal(a.subscribedCtx.recoverable, true);

      // From the server API.
      const pa = nextEvent(a, 'publication', 5000);
      const pb = nextEvent(b, 'publication', 5000);
      await server.publish(ch, { n: 1 });
      assert.deepEqual(dec(mode, (await pa).data), { n: 1 });
      assert.deepEqual(dec(mode, (await pb).data), { n: 1 });

      // From a client: the command goes through /emulation.
      const gotB = nextEvent(b, 'publication', 5000);
      await within(a.publish(enc(mode, { n: 2, from: 'alice' })), 5000, 'sub.publish');
      const p2 = await gotB;
      assert.deepEqual(dec(mode, p2.data), { n: 2, from: 'alice' });
      assert.equal(p2.offset, 2);
      assert.equal(p2.info.user, 'alice');

      // Several commands in flight at once.
      const many = collect(b, 'publication', 10, 8000);
      await within(Promise.all(Array.from({ length: 10 }, (_, i) => a.publish(enc(mode, { i })))), 8000, 'ten publishes');
      const got = await many;
      assert.deepEqual(got.map((p) => p.offset), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

      const pr = await within(a.presence(), 5000, 'presence');
      assert.deepEqual(Object.values(pr.clients).map((c) => c.user).sort(), ['alice', 'bob']);
      const st = await within(a.presenceStats(), 5000, 'presenceStats');
      assert.deepEqual({ c: st.numClients, u: st.numUsers }, { c: 2, u: 2 });

      const h = await within(a.history({ limit: 2 }), 5000, 'history');
      assert.deepEqual(h.publications.map((p) => p.offset), [1, 2]);
      assert.deepEqual(dec(mode, h.publications[1].data), { n: 2, from: 'alice' });
      assert.equal(h.offset, 12);

      // Client-level calls work too.
      const pr2 = await within(bob.presenceStats(ch), 5000, 'client.presenceStats');
      assert.equal(pr2.numClients, 2);
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(bob.errors, []);
    }));

    test('missed publications are recovered after a reconnect', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, transportOptions(server, [transport], { token: server.token('carol') }));
      const ch = chan('durable');
      const sub = await subscribe(client, ch);
      const p0 = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 0 });
      await p0;

      const disc = nextEvent(client, 'disconnected', 5000);
      client.disconnect();
      await disc;
      for (let n = 1; n <= 3; n++) await server.publish(ch, { n });

      const resubscribed = nextEvent(sub, 'subscribed', 8000);
      const pubs = collect(sub, 'publication', 3, 8000);
      const connected = nextEvent(client, 'connected', 8000);
      client.connect();
      assert.equal((await connected).transport, transport);
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true, JSON.stringify(ctx));
      assert.deepEqual((await pubs).map((p) => dec(mode, p.data).n), [1, 2, 3]);

      const live = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 4 });
      assert.equal((await live).offset, 5);
    }));

    test('a server disconnect reaches the client and it reconnects', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, transportOptions(server, [transport], { token: server.token('dan') }));
      const first = client.connectedCtx.client;
      const connecting = nextEvent(client, 'connecting', 5000);
      const again = nextEvent(client, 'connected', 8000);
      await server.api('disconnect', { user: 'dan', disconnect: { code: 4001, reason: 'go away and back' } });
      const c = await connecting;
      assert.equal(c.code, 4001, JSON.stringify(c));
      assert.equal(c.reason, 'go away and back');
      const ctx = await again;
      assert.notEqual(ctx.client, first);
      assert.equal(ctx.transport, transport);
    }));
  });
}

describe('fallback', () => {
  for (const fallback of ['sse', 'http_stream']) {
    test(`WebSocket blocked: the client falls back to ${fallback}`, withServer({}, async (t, server) => {
      const client = await connectClient(server, 'json', transportOptions(server, ['websocket', fallback], { token: server.token('erin') }), 8000);
      assert.equal(client.connectedCtx.transport, fallback);
      const ch = chan('fallback');
      const sub = await subscribe(client, ch);
      const p = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { via: fallback });
      assert.deepEqual((await p).data, { via: fallback });
      // The failed WebSocket attempt was reported as a transport error.
      assert.ok(client.errors.some((e) => e.type === 'transport'), JSON.stringify(client.errors));
    }));
  }

  test('with WebSocket available the client stays on WebSocket', withServer({}, async (t, server) => {
    const client = await connectClient(server, 'json', transportOptions(server, ['websocket', 'sse'], { token: server.token('fay'), websocket: WebSocket }));
    assert.equal(client.connectedCtx.transport, 'websocket');
  }));
});

// Reads messages of a plain EventSource into a queue with bounded waits.
function eventQueue(es) {
  const items = [];
  const waiters = [];
  es.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (waiters.length) waiters.shift()(msg);
    else items.push(msg);
  };
  return (ms = 5000, skipPings = true) => new Promise((resolve, reject) => {
    const take = () => {
      while (items.length) {
        const m = items.shift();
        if (skipPings && Object.keys(m).length === 0) continue;
        return resolve(m);
      }
      const timer = setTimeout(() => reject(new Error(`no EventSource message within ${ms} ms`)), ms);
      waiters.push((m) => {
        clearTimeout(timer);
        items.unshift(m);
        take();
      });
    };
    take();
  });
}

describe('unidirectional, no SDK', () => {
  test('plain EventSource follows channels from the token via uni_sse', withServer({}, async (t, server) => {
    const ch = chan('feed');
    const url = new URL(`${server.httpUrl}/connection/uni_sse`);
    url.searchParams.append('cf_connect', JSON.stringify({ token: server.token('watcher', { channels: [ch] }) }));
    const es = new EventSource(url);
    t.after(() => es.close());
    const next = eventQueue(es);
    const first = await next();
    assert.ok(first.connect, JSON.stringify(first));
    assert.ok(first.connect.client);
    assert.ok(first.connect.subs && first.connect.subs[ch], `server-side subscription: ${JSON.stringify(first)}`);

    await server.publish(ch, { price: 42 });
    const push = await next();
    assert.equal(push.channel, ch);
    assert.deepEqual(push.pub.data, { price: 42 });
    assert.equal(push.pub.offset, 1);

    // A subscription added by the backend arrives as a subscribe push.
    const ch2 = chan('extra');
    await server.api('subscribe', { user: 'watcher', channel: ch2 });
    const sub = await next();
    assert.equal(sub.channel, ch2);
    assert.ok(sub.subscribe, JSON.stringify(sub));
    await server.publish(ch2, { x: 1 });
    assert.deepEqual((await next()).pub.data, { x: 1 });

    // The server ends the connection: a disconnect push.
    await server.api('disconnect', { user: 'watcher', disconnect: { code: 4002, reason: 'done' } });
    const bye = await next();
    assert.deepEqual(bye.disconnect && { code: bye.disconnect.code, reason: bye.disconnect.reason }, { code: 4002, reason: 'done' });
    es.close();
  }));

  test('fetch reads uni_http_stream as JSON lines', withServer({}, async (t, server) => {
    const ch = chan('lines');
    const ac = new AbortController();
    t.after(() => ac.abort());
    const res = await fetch(`${server.httpUrl}/connection/uni_http_stream`, {
      method: 'POST',
      body: JSON.stringify({ token: server.token('reader', { channels: [ch] }) }),
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const td = new TextDecoder();
    let buf = '';
    const nextLine = async () => {
      for (;;) {
        const i = buf.indexOf('\n');
        if (i >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          return JSON.parse(line);
        }
        const { done, value } = await within(reader.read(), 5000, 'stream read');
        if (done) throw new Error('stream ended');
        buf += td.decode(value, { stream: true });
      }
    };
    const first = await nextLine();
    assert.ok(first.connect.subs[ch], JSON.stringify(first));
    await server.publish(ch, { n: 1 });
    const push = await nextLine();
    assert.deepEqual([push.channel, push.pub.data], [ch, { n: 1 }]);
    ac.abort();
  }));

  test('uni_websocket sends pushes as text messages', withServer({}, async (t, server) => {
    const ch = chan('ws');
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/connection/uni_websocket`);
    t.after(() => ws.close());
    const msgs = [];
    ws.on('message', (d) => msgs.push(JSON.parse(d.toString())));
    await new Promise((res, rej) => {
      ws.once('open', res);
      ws.once('error', rej);
    });
    ws.send(JSON.stringify({ token: server.token('wsreader', { channels: [ch] }) }));
    const waitFor = async (pred) => {
      for (let i = 0; i < 100; i++) {
        const m = msgs.find(pred);
        if (m) return m;
        await sleep(50);
      }
      throw new Error(`not received; got ${JSON.stringify(msgs)}`);
    };
    const connect = await waitFor((m) => m.connect);
    assert.ok(connect.connect.subs[ch]);
    await server.publish(ch, { hi: true });
    const push = await waitFor((m) => m.pub);
    assert.deepEqual(push.pub.data, { hi: true });
    const closed = new Promise((res) => ws.once('close', (code) => res(code)));
    await server.api('disconnect', { user: 'wsreader' });
    assert.equal(await within(closed, 5000, 'close'), 3503);
  }));
});
