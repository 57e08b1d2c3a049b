// Recovery of missed publications: after a client disconnect, after a server
// restart on the same data dir, and across a graceful shutdown.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, RULES_TOML } from '../lib/server.js';
import { MODES, dec, connectClient, newSub, subscribe, nextEvent, collect, chan } from '../lib/client.js';

for (const mode of MODES) {
  describe(`recovery [${mode}]`, () => {
    test('missed publications are recovered after the client reconnects', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('durable');
      const sub = await subscribe(client, ch);
      assert.equal(sub.subscribedCtx.recoverable, true, 'channel is recoverable');
      const p0 = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 0 });
      await p0;

      const disc = nextEvent(client, 'disconnected', 5000);
      client.disconnect();
      await disc;
      for (let n = 1; n <= 5; n++) await server.publish(ch, { n });

      const resubscribed = nextEvent(sub, 'subscribed', 8000);
      const pubs = collect(sub, 'publication', 5, 8000);
      client.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true, `wasRecovering: ${JSON.stringify(ctx)}`);
      assert.equal(ctx.recovered, true, `recovered: ${JSON.stringify(ctx)}`);
      assert.equal(ctx.hasRecoveredPublications, true);
      const got = await pubs;
      assert.deepEqual(got.map((p) => dec(mode, p.data).n), [1, 2, 3, 4, 5], 'in order, none lost');
      assert.deepEqual(got.map((p) => p.offset), [2, 3, 4, 5, 6]);

      // Live delivery continues after the recovery.
      const live = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 6 });
      assert.equal((await live).offset, 7);
    }));

    test('recovery with nothing missed reports recovered with no publications', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('quiet');
      const sub = await subscribe(client, ch);
      const p1 = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 1 });
      await p1;
      client.disconnect();
      const resubscribed = nextEvent(sub, 'subscribed', 8000);
      client.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      assert.equal(ctx.hasRecoveredPublications, false);
    }));

    test('first subscribe with `since` recovers from that position', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('since');
      const res = [];
      for (let n = 1; n <= 5; n++) res.push(await server.publish(ch, { n }));
      const sub = newSub(client, ch, { since: { offset: 2, epoch: res[0].epoch } });
      const subscribed = nextEvent(sub, 'subscribed', 5000);
      const pubs = collect(sub, 'publication', 3, 5000);
      sub.subscribe();
      const ctx = await subscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true, `${JSON.stringify(ctx)}`);
      assert.deepEqual((await pubs).map((p) => p.offset), [3, 4, 5]);
    }));

    test('recovery from a foreign epoch is reported as not recovered', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('epoch');
      for (let n = 1; n <= 3; n++) await server.publish(ch, { n });
      const sub = newSub(client, ch, { since: { offset: 1, epoch: 'not-the-epoch' } });
      const subscribed = nextEvent(sub, 'subscribed', 5000);
      sub.subscribe();
      const ctx = await subscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, false, `epoch mismatch must not claim recovery: ${JSON.stringify(ctx)}`);
      assert.notEqual(ctx.streamPosition.epoch, 'not-the-epoch');
      assert.equal(ctx.streamPosition.offset, 3, 'reply carries the current position');
    }));

    test('recovery past the history window (history_size 100) is reported as not recovered', withServer({ config: RULES_TOML, dev: false }, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('window');
      const sub = await subscribe(client, ch);
      const p0 = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 0 });
      await p0;
      client.disconnect();
      for (let n = 1; n <= 120; n++) await server.publish(ch, { n });
      const resubscribed = nextEvent(sub, 'subscribed', 8000);
      client.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, false, `20 publications fell out of the 100-message window: ${JSON.stringify(ctx)}`);
    }));

    test('missed publications are recovered after a server restart with the same data dir', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('persist');
      const sub = await subscribe(client, ch);
      const p0 = nextEvent(sub, 'publication', 5000);
      const r0 = await server.publish(ch, { n: 0 });
      await p0;

      client.disconnect();
      const st = await server.restart();
      assert.equal(st.code, 0, `graceful exit on SIGTERM, got ${JSON.stringify(st)}`);

      const results = [];
      for (let n = 1; n <= 3; n++) results.push(await server.publish(ch, { n }));
      assert.deepEqual(results.map((r) => r.offset), [2, 3, 4], 'offsets continue after restart');
      assert.ok(results.every((r) => r.epoch === r0.epoch), `epoch survives a restart: before ${r0.epoch}, after ${results.map((r) => r.epoch)}`);

      const resubscribed = nextEvent(sub, 'subscribed', 8000);
      const pubs = collect(sub, 'publication', 3, 8000);
      client.connect();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true, `recovered after restart: ${JSON.stringify(ctx)}`);
      assert.deepEqual((await pubs).map((p) => dec(mode, p.data).n), [1, 2, 3]);
    }));

    test('graceful shutdown: client told 3001, reconnects by itself to the restarted server and recovers', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('restart');
      const sub = await subscribe(client, ch);
      await server.publish(ch, { n: 1 });

      const connecting = nextEvent(client, 'connecting', 10000);
      const st = await server.stop();
      assert.equal(st.code, 0, `exit code 0 after SIGTERM, got ${JSON.stringify(st)}`);
      const c = await connecting;
      assert.equal(c.code, 3001, `connecting after shutdown carries the shutdown code 3001: ${JSON.stringify(c)}`);

      const reconnected = nextEvent(client, 'connected', 15000);
      const resubscribed = nextEvent(sub, 'subscribed', 15000);
      await server.start();
      await reconnected;
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true, `recovered after restart: ${JSON.stringify(ctx)}`);

      const live = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { n: 2 });
      const p = await live;
      assert.equal(p.offset, 2);
      assert.deepEqual(dec(mode, p.data), { n: 2 });
    }));
  });
}
