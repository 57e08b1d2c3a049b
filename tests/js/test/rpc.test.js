// RPC and async `send`.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, sleep } from '../lib/server.js';
import { MODES, enc, dec, connectClient, within, rejection } from '../lib/client.js';

for (const mode of MODES) {
  describe(`rpc [${mode}]`, () => {
    test('echo returns the request data unchanged', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const payload = { text: 'héllo wörld ✓', n: 42, f: 1.5, list: [1, 'two', null, { three: true }], nested: { a: { b: [] } } };
      const r = await within(client.rpc('echo', enc(mode, payload)), 5000, 'rpc echo');
      assert.deepEqual(dec(mode, r.data), payload);
      if (mode === 'protobuf') {
        // Binary data goes through untouched.
        const bytes = new Uint8Array([0, 1, 2, 254, 255, 10, 13, 0]);
        const rb = await within(client.rpc('echo', bytes), 5000, 'rpc echo bytes');
        assert.deepEqual(Array.from(rb.data), Array.from(bytes));
      }
    }));

    test('unknown method: error 104, connection kept', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      const err = await rejection(client.rpc('no.such.method', enc(mode, {})), 'rpc unknown method');
      assert.equal(err.code, 104, `error ${JSON.stringify(err)}`);
      assert.equal(client.state, 'connected');
      const r = await within(client.rpc('echo', enc(mode, { ok: 1 })), 5000, 'rpc after error');
      assert.deepEqual(dec(mode, r.data), { ok: 1 });
    }));

    test('send: async message accepted without error or disconnect', withServer({}, async (t, server) => {
      const client = await connectClient(server, mode, { token: server.token('alice') });
      await within(client.send(enc(mode, { type: 'typing', on: true })), 5000, 'send');
      await within(client.send(enc(mode, { type: 'typing', on: false })), 5000, 'send 2');
      await sleep(300);
      assert.equal(client.state, 'connected');
      assert.deepEqual(client.disconnects, []);
      assert.equal(client.connectings.length, 1, 'no reconnect after send');
      assert.deepEqual(client.errors, []);
      const r = await within(client.rpc('echo', enc(mode, 'still here')), 5000, 'rpc after send');
      assert.deepEqual(dec(mode, r.data), 'still here');
    }));
  });
}
