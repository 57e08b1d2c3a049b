// Presence, presence stats and join/leave pushes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer } from '../lib/server.js';
import { MODES, dec, connectClient, subscribe, nextEvent, within, chan } from '../lib/client.js';

for (const mode of MODES) {
  describe(`presence [${mode}]`, () => {
    test('presence and presenceStats list every subscriber with its info', withServer({}, async (t, server) => {
      const alice = await connectClient(server, mode, { token: server.token('alice', { info: { name: 'Alice' } }) });
      const bob = await connectClient(server, mode, { token: server.token('bob', { info: { name: 'Bob' } }) });
      const bob2 = await connectClient(server, mode, { token: server.token('bob', { info: { name: 'Bob' } }) });
      const ch = chan('lobby');
      const a = await subscribe(alice, ch);
      await subscribe(bob, ch);
      await subscribe(bob2, ch);

      const pr = await within(a.presence(), 5000, 'sub.presence');
      const clients = pr.clients;
      assert.deepEqual(Object.keys(clients).sort(), [alice, bob, bob2].map((c) => c.connectedCtx.client).sort());
      const ac = clients[alice.connectedCtx.client];
      assert.equal(ac.client, alice.connectedCtx.client);
      assert.equal(ac.user, 'alice');
      assert.deepEqual(dec(mode, ac.connInfo), { name: 'Alice' }, `conn info in presence: ${JSON.stringify(ac)}`);
      assert.equal(clients[bob.connectedCtx.client].user, 'bob');

      const st = await within(a.presenceStats(), 5000, 'sub.presenceStats');
      assert.deepEqual({ numClients: st.numClients, numUsers: st.numUsers }, { numClients: 3, numUsers: 2 });

      // Client-level calls give the same answer.
      const pr2 = await within(bob.presence(ch), 5000, 'client.presence');
      assert.equal(Object.keys(pr2.clients).length, 3);
      const st2 = await within(bob.presenceStats(ch), 5000, 'client.presenceStats');
      assert.equal(st2.numClients, 3);

      // Leaving updates presence.
      const gone = nextEvent(bob2, 'disconnected', 5000);
      bob2.disconnect();
      await gone;
      let after;
      for (let i = 0; i < 20; i++) {
        after = await within(a.presenceStats(), 5000, 'presenceStats after leave');
        if (after.numClients === 2) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual({ numClients: after.numClients, numUsers: after.numUsers }, { numClients: 2, numUsers: 2 });
    }));

    test('join and leave events are seen by another subscriber', withServer({}, async (t, server) => {
      const alice = await connectClient(server, mode, { token: server.token('alice') });
      const bob = await connectClient(server, mode, { token: server.token('bob', { info: { name: 'Bob' } }) });
      const ch = chan('party');
      const a = await subscribe(alice, ch, { joinLeave: true });

      const joined = nextEvent(a, 'join', 5000, (ctx) => ctx.info.user === 'bob');
      const b = await subscribe(bob, ch, { joinLeave: true });
      const j = await joined;
      assert.equal(j.channel, ch);
      assert.equal(j.info.user, 'bob');
      assert.equal(j.info.client, bob.connectedCtx.client);
      assert.deepEqual(dec(mode, j.info.connInfo), { name: 'Bob' });

      const left = nextEvent(a, 'leave', 5000, (ctx) => ctx.info.user === 'bob');
      b.unsubscribe();
      const l = await left;
      assert.equal(l.channel, ch);
      assert.equal(l.info.client, bob.connectedCtx.client);

      // A disconnect is a leave too.
      const joined2 = nextEvent(a, 'join', 5000, (ctx) => ctx.info.user === 'bob');
      b.subscribe();
      await joined2;
      const left2 = nextEvent(a, 'leave', 5000, (ctx) => ctx.info.user === 'bob');
      bob.disconnect();
      await left2;
    }));
  });
}
