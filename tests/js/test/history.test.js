// History from the SDK: limit, since, reverse, position only.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer } from '../lib/server.js';
import { MODES, dec, connectClient, subscribe, within, chan } from '../lib/client.js';

for (const mode of MODES) {
  describe(`history [${mode}]`, () => {
    test('history with limit, since and reverse', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const ch = chan('log');
      const results = [];
      for (let i = 1; i <= 10; i++) results.push(await server.publish(ch, { i }));
      assert.deepEqual(results.map((r) => r.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'API publish offsets');
      const epoch = results[0].epoch;
      assert.ok(epoch, 'publish result has an epoch');
      assert.ok(results.every((r) => r.epoch === epoch), 'one epoch');

      const sub = await subscribe(client, ch);
      assert.deepEqual(sub.subscribedCtx.streamPosition, { offset: 10, epoch });

      const items = (h) => h.publications.map((p) => [p.offset, dec(mode, p.data).i]);

      const first3 = await within(sub.history({ limit: 3 }), 5000, 'history limit 3');
      assert.deepEqual(items(first3), [[1, 1], [2, 2], [3, 3]]);
      assert.equal(first3.offset, 10, 'history result offset is the stream top');
      assert.equal(first3.epoch, epoch);

      const last3 = await within(sub.history({ limit: 3, reverse: true }), 5000, 'history reverse');
      assert.deepEqual(items(last3), [[10, 10], [9, 9], [8, 8]]);

      const since5 = await within(sub.history({ since: { offset: 5, epoch }, limit: 10 }), 5000, 'history since');
      assert.deepEqual(items(since5), [[6, 6], [7, 7], [8, 8], [9, 9], [10, 10]]);

      const since5lim2 = await within(sub.history({ since: { offset: 5, epoch }, limit: 2 }), 5000, 'history since limit');
      assert.deepEqual(items(since5lim2), [[6, 6], [7, 7]]);

      const all = await within(client.history(ch, { limit: 100 }), 5000, 'client.history');
      assert.equal(all.publications.length, 10);

      // limit 0 (not set): only the stream position.
      const pos = await within(sub.history(), 5000, 'history position only');
      assert.deepEqual(pos.publications, []);
      assert.equal(pos.offset, 10);
      assert.equal(pos.epoch, epoch);
    }));

    test('history of an empty channel', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const h = await within(client.history(chan('empty'), { limit: 10 }), 5000, 'history empty');
      assert.deepEqual(h.publications, []);
      assert.equal(h.offset, 0);
    }));
  });
}
