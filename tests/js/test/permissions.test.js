// Channel rules from a TOML config (no --dev): private channels with
// subscription tokens and their refresh, user-limited channels, read-only
// namespaces, unknown namespaces.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import { withServer, sleep, RULES_TOML } from '../lib/server.js';
import { MODES, enc, dec, newClient, connectClient, newSub, subscribe, nextEvent, within, rejection, chan } from '../lib/client.js';

const RULES = { config: RULES_TOML, dev: false };

for (const mode of MODES) {
  describe(`permissions [${mode}]`, () => {
    test('private channel: refused (103) without a token, works with a `token create --channel` token', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('secret:');
      const denied = newSub(client, ch);
      const unsub = nextEvent(denied, 'unsubscribed', 5000);
      denied.subscribe();
      const u = await unsub;
      assert.equal(u.code, 103, `subscribe without token refused with 103: ${JSON.stringify(u)}`);
      assert.equal(denied.state, 'unsubscribed');
      client.removeSubscription(denied);

      const subToken = await server.cliToken(['--user', 'alice', '--channel', ch], { json: true });
      const claims = jwt.verify(subToken, server.secret);
      assert.equal(claims.sub, 'alice');
      assert.equal(claims.channel, ch);
      const sub = await subscribe(client, ch, { token: subToken });
      const got = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { top: 'secret' });
      assert.deepEqual(dec(mode, (await got).data), { top: 'secret' });
    }));

    test('private channel: a subscription token for another user or channel is refused', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('secret:');
      for (const token of [server.subToken('bob', ch), server.subToken('alice', `${ch}-other`)]) {
        const sub = newSub(client, ch, { token });
        const unsub = nextEvent(sub, 'unsubscribed', 5000);
        sub.subscribe();
        const u = await unsub;
        assert.ok(u.code >= 100, `refused with a protocol error code: ${JSON.stringify(u)}`);
        client.removeSubscription(sub);
      }
      assert.equal(client.state, 'connected');
    }));

    test('subscription refresh: short-lived subscription token refreshed via the Subscription getToken', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('secret:');
      let calls = 0;
      const sub = await subscribe(client, ch, {
        token: server.subToken('alice', ch, { ttl: 3 }),
        getToken: async (ctx) => {
          calls += 1;
          assert.equal(ctx.channel, ch);
          return server.subToken('alice', ctx.channel, { ttl: 60 });
        },
      });
      let unsubscribed = 0;
      sub.on('unsubscribed', () => { unsubscribed += 1; });
      sub.on('subscribing', () => { unsubscribed += 1; });
      await sleep(6000);
      assert.ok(calls >= 1, 'subscription getToken called');
      assert.equal(sub.state, 'subscribed');
      assert.equal(unsubscribed, 0, 'subscription never dropped');
      assert.equal(client.connectings.length, 1, `no reconnect: ${JSON.stringify(client.connectings)}`);
      assert.deepEqual(sub.errors, []);
      const got = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { still: 'subscribed' });
      assert.deepEqual(dec(mode, (await got).data), { still: 'subscribed' });
    }));

    test('subscription getToken used for the first subscribe when no token is given', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('secret:');
      let calls = 0;
      await subscribe(client, ch, {
        getToken: async (ctx) => {
          calls += 1;
          return server.subToken('alice', ctx.channel);
        },
      });
      assert.equal(calls, 1);
    }));

    test('user-limited channel: members subscribe, a foreign user gets 103', withServer(RULES, async (t, server) => {
      // The dialog namespace only sets subscribe rules: client publish stays off
      // there (namespaces do not inherit [channel.defaults]), so the API publishes.
      const ch = `dialog:${chan('talk')}#alice,bob`;
      const alice = await connectClient(server, mode, { token: server.token('alice') });
      const bob = await connectClient(server, mode, { token: server.token('bob') });
      const carol = await connectClient(server, mode, { token: server.token('carol') });
      const a = await subscribe(alice, ch);
      await subscribe(bob, ch);
      const c = newSub(carol, ch);
      const unsub = nextEvent(c, 'unsubscribed', 5000);
      c.subscribe();
      const u = await unsub;
      assert.equal(u.code, 103, `foreign user refused with 103: ${JSON.stringify(u)}`);
      const got = nextEvent(a, 'publication', 5000);
      await server.publish(ch, { m: 'hi alice' });
      assert.deepEqual(dec(mode, (await got).data), { m: 'hi alice' });
      const err = await rejection(bob.publish(ch, enc(mode, { m: 'x' })), 'client publish in dialog');
      assert.equal(err.code, 103, 'allow_publish_for_client is not set for the dialog namespace');
    }));

    test('read-only namespace: subscribe allowed, client publish refused with 103', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('readonly:');
      const sub = await subscribe(client, ch);
      const err = await rejection(client.publish(ch, enc(mode, { x: 1 })), 'publish on readonly');
      assert.equal(err.code, 103, `publish refused: ${JSON.stringify(err)}`);
      const err2 = await rejection(sub.publish(enc(mode, { x: 2 })), 'sub.publish on readonly');
      assert.equal(err2.code, 103);
      assert.equal(client.state, 'connected');
      // The server API may still publish there.
      const got = nextEvent(sub, 'publication', 5000);
      await server.publish(ch, { from: 'backend' });
      assert.deepEqual(dec(mode, (await got).data), { from: 'backend' });
      // The readonly namespace has no history configured: 108 not available.
      const herr = await rejection(sub.history({ limit: 10 }), 'history on readonly');
      assert.equal(herr.code, 108, `history without history_size: ${JSON.stringify(herr)}`);
    }));

    test('unknown namespace outside --dev: 102', withServer(RULES, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('nosuchns:');
      const sub = newSub(client, ch);
      const unsub = nextEvent(sub, 'unsubscribed', 5000);
      sub.subscribe();
      assert.equal((await unsub).code, 102);
      const err = await rejection(client.publish(ch, enc(mode, {})), 'publish to unknown namespace');
      assert.equal(err.code, 102);
    }));

    test('channel defaults from the config apply to channels without a namespace', withServer(RULES, async (t, server) => {
      const alice = await connectClient(server, mode, { token: server.token('alice') });
      const bob = await connectClient(server, mode, { token: server.token('bob') });
      const ch = chan('plain');
      const a = await subscribe(alice, ch);
      assert.equal(a.subscribedCtx.recoverable, true, 'force_recovery from [channel.defaults]');
      // force_push_join_leave: join pushes without asking for them.
      const joined = nextEvent(a, 'join', 5000);
      await subscribe(bob, ch);
      assert.equal((await joined).info.user, 'bob');
      const st = await within(a.presenceStats(), 5000, 'presenceStats');
      assert.equal(st.numClients, 2);
    }));

    test('tokens signed with the dev secret are refused when a config sets another secret', withServer(RULES, async (t, server) => {
      const devToken = jwt.sign({ sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 }, 'dev-token-secret', { algorithm: 'HS256' });
      const client = newClient(server, mode, { token: devToken });
      const disc = nextEvent(client, 'disconnected', 5000);
      client.connect();
      assert.equal((await disc).code, 3500);
    }));
  });
}
