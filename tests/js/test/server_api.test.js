// Server-side subscriptions and server API actions on SDK clients.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, sleep } from '../lib/server.js';
import { MODES, dec, newClient, connectClient, subscribe, nextEvent, collect, chan } from '../lib/client.js';

for (const mode of MODES) {
  describe(`server API and server-side subscriptions [${mode}]`, () => {
    test('token channels claim: server-side subscriptions deliver on the client publication event', withServer({}, async (t, server) => {
      const chA = chan('personal');
      const chB = chan('alerts');
      const client = newClient(server, mode, { token: server.token('alice', { channels: [chA, chB] }) });
      const subscribed = collect(client, 'subscribed', 2, 5000);
      const connected = nextEvent(client, 'connected', 5000);
      client.connect();
      await connected;
      const subs = await subscribed;
      assert.deepEqual(subs.map((s) => s.channel).sort(), [chA, chB].sort());

      const pubs = collect(client, 'publication', 2, 5000);
      await server.publish(chA, { to: 'A' });
      await server.publish(chB, { to: 'B' });
      const got = await pubs;
      assert.deepEqual(got.map((p) => [p.channel, dec(mode, p.data)]), [[chA, { to: 'A' }], [chB, { to: 'B' }]]);
      assert.equal(got[0].offset, 1);
    }));

    test('API subscribe adds a server-side subscription to a connected user', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('pushed');
      const subscribed = nextEvent(client, 'subscribed', 5000, (ctx) => ctx.channel === ch);
      await server.api('subscribe', { user: 'alice', channel: ch });
      await subscribed;
      const got = nextEvent(client, 'publication', 5000, (ctx) => ctx.channel === ch);
      await server.publish(ch, { hello: 'server-side' });
      assert.deepEqual(dec(mode, (await got).data), { hello: 'server-side' });
    }));

    test('API unsubscribe removes a client subscription', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('kick');
      const sub = await subscribe(client, ch);
      const unsub = nextEvent(sub, 'unsubscribed', 5000);
      await server.api('unsubscribe', { user: 'alice', channel: ch });
      const u = await unsub;
      assert.equal(sub.state, 'unsubscribed', `unsubscribed ctx ${JSON.stringify(u)}`);
      assert.equal(client.state, 'connected');
    }));

    test('API disconnect of the user: the client sees a terminal disconnect', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const bystander = await connectClient(server, mode, { token: server.token('bob') });
      const disc = nextEvent(client, 'disconnected', 5000);
      await server.api('disconnect', { user: 'alice' });
      const d = await disc;
      assert.ok(d.code >= 3500 && d.code < 5000, `terminal (no-reconnect) disconnect code, got ${JSON.stringify(d)}`);
      await sleep(300);
      assert.equal(client.state, 'disconnected');
      assert.equal(bystander.state, 'connected', 'other users stay connected');
    }));

    test('API disconnect with a custom code and reason', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const disc = nextEvent(client, 'disconnected', 5000);
      await server.api('disconnect', { user: 'alice', disconnect: { code: 4501, reason: 'kicked by test' } });
      const d = await disc;
      assert.deepEqual({ code: d.code, reason: d.reason }, { code: 4501, reason: 'kicked by test' });
    }));

    test('API presence and channels reflect SDK subscribers', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('visible');
      await subscribe(client, ch);
      const pr = await server.api('presence', { channel: ch });
      const entries = Object.values(pr.result.presence);
      assert.equal(entries.length, 1);
      assert.equal(entries[0].user, 'alice');
      assert.equal(entries[0].client, client.connectedCtx.client);
      const chs = await server.api('channels', {});
      assert.ok(chs.result.channels[ch], `channels lists ${ch}: ${JSON.stringify(chs)}`);
      assert.equal(chs.result.channels[ch].num_clients, 1);
      const hist = await server.api('history', { channel: ch, limit: 10 });
      assert.deepEqual(hist.result.publications ?? [], []);
    }));
  });
}
