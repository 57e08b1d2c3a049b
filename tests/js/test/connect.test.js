// Connection: connect options, tokens (CLI-minted and self-minted), refresh,
// expired and invalid tokens.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import { withServer, sleep } from '../lib/server.js';
import { MODES, enc, dec, newClient, connectClient, nextEvent, within } from '../lib/client.js';

for (const mode of MODES) {
  describe(`connect [${mode}]`, () => {
    test('connects with a CLI-minted token, data, name and version; connected event has a client id', withServer({}, async (t, server) => {
      const token = await server.cliToken(['--user', 'alice', '--ttl', '1h', '--info', '{"name":"Alice"}']);
      const claims = jwt.verify(token, server.secret, { algorithms: ['HS256'] });
      assert.equal(claims.sub, 'alice', 'CLI token sub claim');
      assert.ok(claims.exp > Date.now() / 1000 + 3000, 'CLI token exp about 1h ahead');
      assert.deepEqual(claims.info, { name: 'Alice' }, 'CLI token info claim');

      const client = await connectClient(server, mode, {
        token,
        data: enc(mode, { hello: 'world' }),
        name: 'switchboard-js-tests',
        version: '1.2.3',
      });
      const ctx = client.connectedCtx;
      assert.equal(typeof ctx.client, 'string');
      assert.ok(ctx.client.length > 0, 'connected ctx has a non-empty client id');
      assert.equal(ctx.transport, 'websocket');
      assert.equal(client.state, 'connected');

      // A second connection of the same user gets a different client id.
      const other = await connectClient(server, mode, { token: server.token('alice') });
      assert.notEqual(other.connectedCtx.client, ctx.client, 'client ids are unique per connection');
      assert.deepEqual(client.errors, []);
    }));

    test('CLI --json token works', withServer({}, async (t, server) => {
      const token = await server.cliToken(['--user', 'bob'], { json: true });
      assert.equal(jwt.verify(token, server.secret).sub, 'bob');
      const client = await connectClient(server, mode, { token });
      assert.ok(client.connectedCtx.client);
    }));

    test('invalid token signature: disconnected with 3500, no reconnect', withServer({}, async (t, server) => {
      const bad = jwt.sign({ sub: 'mallory', exp: Math.floor(Date.now() / 1000) + 3600 }, 'not-the-secret', { algorithm: 'HS256' });
      const client = newClient(server, mode, { token: bad });
      const disc = nextEvent(client, 'disconnected', 5000);
      client.connect();
      const ctx = await disc;
      assert.equal(ctx.code, 3500, `disconnect code for invalid token, got ${JSON.stringify(ctx)}`);
      await sleep(300);
      assert.equal(client.state, 'disconnected');
    }));

    test('expired token without getToken: error 109 then disconnected as unauthorized', withServer({}, async (t, server) => {
      const expired = server.token('alice', { exp: Math.floor(Date.now() / 1000) - 60 });
      const client = newClient(server, mode, { token: expired });
      const disc = nextEvent(client, 'disconnected', 8000);
      client.connect();
      const ctx = await disc;
      assert.equal(ctx.code, 1, `SDK 'unauthorized' disconnect code, got ${JSON.stringify(ctx)}`);
      const connectErrors = client.errors.filter((e) => e.type === 'connect');
      assert.ok(connectErrors.some((e) => e.error.code === 109), `server replied 109 token expired; errors: ${JSON.stringify(client.errors)}`);
    }));

    test('expired token with getToken: getToken is called and the client connects', withServer({}, async (t, server) => {
      let calls = 0;
      const client = newClient(server, mode, {
        token: server.token('alice', { exp: Math.floor(Date.now() / 1000) - 60 }),
        getToken: async () => {
          calls += 1;
          return server.token('alice');
        },
      });
      const connected = nextEvent(client, 'connected', 8000);
      client.connect();
      await connected;
      assert.ok(calls >= 1, 'getToken called');
      assert.ok(client.errors.some((e) => e.error.code === 109), `error 109 seen: ${JSON.stringify(client.errors)}`);
    }));

    test('connection refresh: short-lived token is refreshed through getToken, connection kept', withServer({}, async (t, server) => {
      let calls = 0;
      const client = await connectClient(server, mode, {
        token: server.token('alice', { ttl: 3 }),
        getToken: async () => {
          calls += 1;
          return server.token('alice', { ttl: 60 });
        },
      });
      const clientId = client.connectedCtx.client;
      await sleep(6000);
      assert.equal(client.state, 'connected');
      assert.ok(calls >= 1, 'getToken called for refresh');
      assert.equal(client.connectings.length, 1, `no reconnect after expiry: connecting events ${JSON.stringify(client.connectings)}`);
      assert.deepEqual(client.disconnects, []);
      // Still the same connection and it still works.
      const r = await within(client.rpc('echo', enc(mode, { after: 'refresh' })), 5000, 'rpc after refresh');
      assert.deepEqual(dec(mode, r.data), { after: 'refresh' });
      assert.equal(client.connectedCtx.client, clientId);
    }));
  });
}
