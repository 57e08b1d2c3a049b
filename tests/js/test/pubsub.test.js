// Subscribe / unsubscribe and publications between SDK clients and from the
// server API.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, sleep } from '../lib/server.js';
import { MODES, enc, dec, connectClient, newSub, subscribe, nextEvent, collect, within, chan } from '../lib/client.js';

for (const mode of MODES) {
  describe(`pubsub [${mode}]`, () => {
    test('subscribe reports a recoverable, positioned stream; unsubscribe stops delivery', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('news');
      const sub = await subscribe(client, ch);
      const ctx = sub.subscribedCtx;
      assert.equal(ctx.channel, ch);
      assert.equal(sub.state, 'subscribed');
      assert.equal(ctx.recoverable, true, `subscribe reply must carry recoverable: true (dev forces recovery): ${JSON.stringify(ctx)}`);
      assert.equal(ctx.positioned, true, `subscribe reply must carry positioned: true: ${JSON.stringify(ctx)}`);
      assert.ok(ctx.streamPosition, 'subscribed ctx has a stream position');
      assert.equal(typeof ctx.streamPosition.epoch, 'string');
      assert.ok(ctx.streamPosition.epoch.length > 0, 'epoch is non-empty');
      assert.equal(ctx.streamPosition.offset, 0, 'fresh channel starts at offset 0');
      assert.equal(ctx.wasRecovering, false);

      const first = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 1 });
      assert.deepEqual(dec(mode, (await first).data), { n: 1 });

      const unsubscribed = nextEvent(sub, 'unsubscribed', 5000);
      sub.unsubscribe();
      const u = await unsubscribed;
      assert.equal(u.channel, ch);
      assert.equal(u.code, 0, 'unsubscribe called');
      assert.equal(sub.state, 'unsubscribed');
      // Give the unsubscribe command time to reach the server.
      await within(client.rpc('echo', enc(mode, 1)), 5000, 'barrier rpc');

      let late = 0;
      sub.on('publication', () => { late += 1; });
      await server.publish(ch, { n: 2 });
      await sleep(400);
      assert.equal(late, 0, 'no publication after unsubscribe');

      // Subscribing again works and sees the stream moved on.
      const again = nextEvent(sub, 'subscribed', 5000);
      sub.subscribe();
      const ctx2 = await again;
      assert.equal(ctx2.streamPosition.offset, 2);
      assert.equal(ctx2.streamPosition.epoch, ctx.streamPosition.epoch);
    }));

    test('publish from one client is received by another with data and publisher info intact', withServer({}, async (t, server) => {
      const alice = await connectClient(server, mode, { token: server.token('alice', { info: { name: 'Alice' } }) });
      const bob = await connectClient(server, mode, { token: server.token('bob') });
      const ch = chan('chat');
      const bobSub = await subscribe(bob, ch);
      const payloads = [
        { text: 'hi bob', emoji: '👋', n: 1, nested: { deep: [1, 2, { x: null }] } },
        { text: 'second', big: 'x'.repeat(20_000) },
        'a bare string',
        12345,
      ];
      const got = collect(bobSub, 'publication', payloads.length, 8000);
      for (const p of payloads) {
        await within(alice.publish(ch, enc(mode, p)), 5000, 'client publish');
      }
      const pubs = await got;
      assert.deepEqual(pubs.map((p) => dec(mode, p.data)), payloads);
      const offsets = pubs.map((p) => p.offset);
      assert.deepEqual(offsets, [1, 2, 3, 4], 'publications carry increasing offsets');
      for (const p of pubs) {
        assert.equal(p.channel, ch);
        assert.ok(p.info, `publication from a client carries publisher info: ${JSON.stringify(p)}`);
        assert.equal(p.info.user, 'alice');
        assert.equal(p.info.client, alice.connectedCtx.client);
      }
      assert.deepEqual(dec(mode, pubs[0].info.connInfo), { name: 'Alice' }, 'publisher conn info from the token');
    }));

    test('a subscription publishes to itself and to other subscribers', withServer({}, async (t, server) => {
      const alice = await connectClient(server, mode, { token: server.token('alice') });
      const bob = await connectClient(server, mode, { token: server.token('bob') });
      const ch = chan('room');
      const a = await subscribe(alice, ch);
      const b = await subscribe(bob, ch);
      const ga = nextEvent(a, 'publication', 5000);
      const gb = nextEvent(b, 'publication', 5000);
      await within(a.publish(enc(mode, { from: 'alice' })), 5000, 'sub.publish');
      assert.deepEqual(dec(mode, (await ga).data), { from: 'alice' });
      assert.deepEqual(dec(mode, (await gb).data), { from: 'alice' });
    }));

    test('server API publish reaches an SDK subscriber; result carries offset and epoch', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('feed');
      const sub = await subscribe(client, ch);
      const got = nextEvent(sub, 'publication', 5000);
      const res = await server.publish(ch, { via: 'api', list: [1, 2, 3] });
      assert.ok(res, 'publish result');
      assert.equal(res.offset, 1, `publish result offset: ${JSON.stringify(res)}`);
      assert.equal(res.epoch, sub.subscribedCtx.streamPosition.epoch, 'publish result epoch matches the subscribe epoch');
      const p = await got;
      assert.deepEqual(dec(mode, p.data), { via: 'api', list: [1, 2, 3] });
      assert.equal(p.offset, 1);
      assert.equal(p.channel, ch);
    }));

    test('200 publications arrive complete and in order', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('burst');
      const sub = await subscribe(client, ch);
      const got = collect(sub, 'publication', 200, 20000);
      // Half through the server API, half from another SDK client.
      const pubber = await connectClient(server, mode, { token: server.token('bob') });
      for (let i = 0; i < 100; i++) await server.publish(ch, { i });
      await Promise.all(Array.from({ length: 100 }, (_, k) => pubber.publish(ch, enc(mode, { i: 100 + k }))));
      const pubs = await got;
      assert.deepEqual(pubs.map((p) => p.offset), Array.from({ length: 200 }, (_, k) => k + 1), 'consecutive offsets');
      assert.deepEqual(pubs.slice(0, 100).map((p) => dec(mode, p.data).i), Array.from({ length: 100 }, (_, k) => k));
      assert.deepEqual(pubs.slice(100).map((p) => dec(mode, p.data).i).sort((a, b) => a - b), Array.from({ length: 100 }, (_, k) => 100 + k));
    }));

    test('batched commands (several in one frame) are all answered', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const chans = [chan('batch'), chan('batch'), chan('batch')];
      const subs = chans.map((c) => newSub(client, c));
      const subscribed = subs.map((s) => nextEvent(s, 'subscribed', 5000));
      client.startBatching();
      subs.forEach((s) => s.subscribe());
      client.stopBatching();
      await Promise.all(subscribed);
      client.startBatching();
      const calls = [
        client.rpc('echo', enc(mode, { k: 1 })),
        client.publish(chans[0], enc(mode, { p: 1 })),
        client.rpc('echo', enc(mode, { k: 2 })),
        client.presenceStats(chans[1]),
        client.history(chans[0], { limit: 10 }),
      ];
      client.stopBatching();
      const [r1, , r2, st] = await within(Promise.all(calls), 5000, 'batched calls');
      assert.deepEqual(dec(mode, r1.data), { k: 1 });
      assert.deepEqual(dec(mode, r2.data), { k: 2 });
      assert.equal(st.numClients, 1);
    }));

    test('many subscriptions on one connection, each gets only its channel', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const chans = [chan('multi'), chan('multi'), chan('multi')];
      const subs = [];
      for (const c of chans) subs.push(await subscribe(client, c));
      const waits = subs.map((s) => collect(s, 'publication', 2, 5000));
      for (const c of chans) {
        await server.publish(c, { ch: c, i: 0 });
        await server.publish(c, { ch: c, i: 1 });
      }
      const results = await Promise.all(waits);
      results.forEach((pubs, i) => {
        assert.deepEqual(pubs.map((p) => dec(mode, p.data)), [{ ch: chans[i], i: 0 }, { ch: chans[i], i: 1 }]);
      });
    }));
  });
}
