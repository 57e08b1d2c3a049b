// The built-in OAuth 2.0 server driven as a browser would (authorization
// code + PKCE through the login page), then centrifuge-js connecting with the
// access token and being disconnected when the token is revoked.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { withServer } from '../lib/server.js';
import { MODES, enc, dec, connectClient, subscribe, nextEvent, chan } from '../lib/client.js';

const REDIRECT = 'http://127.0.0.1:9/callback';

const b64url = (buf) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

// Follows the login page like a browser: GET the form, fill it, POST it,
// read the code from the redirect, exchange it at the token endpoint.
async function signIn(server, clientId, username, password) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'st4te',
  });
  const page = await fetch(`${server.httpUrl}/oauth/authorize?${params}`);
  assert.equal(page.status, 200);
  const html = await page.text();
  const form = new URLSearchParams();
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    form.set(m[1], m[2].replace(/&amp;/g, '&').replace(/&quot;/g, '"'));
  }
  assert.ok(html.includes('<label for="username">'), 'the form has labelled fields');
  form.set('username', username);
  form.set('password', password);
  const posted = await fetch(`${server.httpUrl}/oauth/authorize`, {
    method: 'POST',
    body: form,
    redirect: 'manual',
  });
  assert.equal(posted.status, 302, await posted.text());
  const location = new URL(posted.headers.get('location'));
  assert.equal(`${location.origin}${location.pathname}`, REDIRECT);
  assert.equal(location.searchParams.get('state'), 'st4te');
  const code = location.searchParams.get('code');
  const tokenResp = await fetch(`${server.httpUrl}/oauth/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT,
      client_id: clientId,
      code_verifier: verifier,
    }),
  });
  assert.equal(tokenResp.status, 200);
  return tokenResp.json();
}

for (const mode of MODES) {
  describe(`OAuth 2.0 sign-in [${mode}]`, () => {
    test('code + PKCE token connects centrifuge-js; revoking it disconnects the client', withServer({}, async (t, server) => {
      // Not one of the users `--dev` seeds (alice, bob, carol, admin).
      const made = await server.api('user_create', {
        username: 'zoe',
        password: 'correct horse battery',
        grants: { channels: [{ pattern: 'chat:*', subscribe: true, publish: true, history: true }] },
      });
      assert.ok(made.result, JSON.stringify(made));
      const created = await server.api('oauth_client_create', { name: 'Demo app', redirect_uris: [REDIRECT] });
      const tokens = await signIn(server, created.result.client.id, 'zoe', 'correct horse battery');
      assert.equal(tokens.token_type, 'Bearer');
      assert.ok(tokens.refresh_token);

      const client = await connectClient(server, mode, { token: tokens.access_token });
      const ch = chan('chat:room');
      const sub = await subscribe(client, ch);
      const got = nextEvent(sub, 'publication', 5000);
      await sub.publish(enc(mode, { text: 'hello' }));
      assert.deepEqual(dec(mode, (await got).data), { text: 'hello' });

      const disconnected = nextEvent(client, 'disconnected', 5000);
      const revoked = await fetch(`${server.httpUrl}/oauth/revoke`, {
        method: 'POST',
        body: new URLSearchParams({ token: tokens.access_token }),
      });
      assert.equal(revoked.status, 200);
      const d = await disconnected;
      assert.equal(d.code, 3500, `disconnected ${JSON.stringify(d)}`);
    }));
  });
}
