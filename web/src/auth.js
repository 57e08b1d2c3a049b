// Sign-in with the server's built-in OAuth 2.0 authorization server:
// authorization code + PKCE (S256) for a public client, tokens kept in
// sessionStorage (per tab), refresh-token rotation, revocation on sign-out.
// Both pages use it; the client id comes from /web/config.json, which the
// server fills with the demo client that `serve --dev` registers.

const STORE = 'switchboard.auth';
const PENDING = 'switchboard.auth.pending';

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function challengeOf(verifier) {
  return b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
}

/** Reads the JSON payload of a JWT (no verification: the server does that). */
export function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return {};
  }
}

/** The server's page configuration: { client_id, redirect_uris, stats_channel }. */
export async function pageConfig() {
  const r = await fetch('/web/config.json', { cache: 'no-store' });
  if (!r.ok) throw new Error(`loading /web/config.json: HTTP ${r.status}`);
  return r.json();
}

async function tokenRequest(params) {
  const r = await fetch('/oauth/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    throw new Error(body.error_description || body.error || `token endpoint answered HTTP ${r.status}`);
  }
  return body;
}

/**
 * One signed-in session of a page. `redirectPath` is the page's own path
 * ('/' or '/dashboard'), registered as a redirect URI of the demo client.
 */
export class Auth {
  constructor(redirectPath) {
    this.redirectUri = new URL(redirectPath, location.origin).href;
    this.clientId = null;
    this.tokens = JSON.parse(sessionStorage.getItem(STORE) || 'null');
    this.refreshing = null;
  }

  /** Loads the client id; throws with a readable message if none is registered. */
  async init() {
    const cfg = await pageConfig();
    this.config = cfg;
    if (!cfg.client_id) {
      throw new Error('No demo OAuth client is registered on this server. Start it with `serve --dev`, or register a public client named "Switchboard demo (dev)" whose redirect URIs are this page.');
    }
    if (!cfg.redirect_uris.includes(this.redirectUri)) {
      throw new Error(`This page's address (${this.redirectUri}) is not a redirect URI of the demo client (${cfg.redirect_uris.join(', ')}). Open the page at one of those addresses.`);
    }
    this.clientId = cfg.client_id;
    return cfg;
  }

  /** Whether an access token is held. */
  get signedIn() {
    return !!this.tokens?.access_token;
  }

  /** The signed-in user: { id, username }. */
  get user() {
    const c = claimsOf(this.tokens?.access_token || '');
    return { id: c.sub, username: c.info?.username || c.sub };
  }

  save(tokens) {
    this.tokens = { ...tokens, expires_at: Date.now() + (tokens.expires_in || 0) * 1000 };
    sessionStorage.setItem(STORE, JSON.stringify(this.tokens));
  }

  /** Sends the browser to the login page. */
  async signIn() {
    const verifier = randomString(48);
    const state = randomString(16);
    sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
    const q = new URLSearchParams({
      response_type: 'code',
      client_id: this.clientId,
      redirect_uri: this.redirectUri,
      code_challenge: await challengeOf(verifier),
      code_challenge_method: 'S256',
      scope: 'connect',
      state,
    });
    location.assign(`/oauth/authorize?${q}`);
  }

  /**
   * Finishes a sign-in if the URL carries ?code=…&state=… (or ?error=…);
   * cleans the URL. Returns true when tokens were obtained.
   */
  async handleRedirect() {
    const q = new URLSearchParams(location.search);
    if (!q.has('code') && !q.has('error')) return false;
    history.replaceState(null, '', location.pathname);
    const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
    sessionStorage.removeItem(PENDING);
    if (q.has('error')) throw new Error(`Sign-in failed: ${q.get('error_description') || q.get('error')}`);
    if (!pending || pending.state !== q.get('state')) throw new Error('Sign-in failed: the reply does not match this tab\'s request (state). Try again.');
    const tokens = await tokenRequest({
      grant_type: 'authorization_code',
      code: q.get('code'),
      redirect_uri: this.redirectUri,
      client_id: this.clientId,
      code_verifier: pending.verifier,
    });
    this.save(tokens);
    return true;
  }

  /** A valid access token, refreshed (rotating the refresh token) when close to expiry. */
  async accessToken({ force = false } = {}) {
    if (!this.tokens) throw new Error('not signed in');
    if (!force && this.tokens.expires_at - Date.now() > 30_000) return this.tokens.access_token;
    if (!this.tokens.refresh_token) throw new Error('session expired: sign in again');
    this.refreshing ??= tokenRequest({
      grant_type: 'refresh_token',
      refresh_token: this.tokens.refresh_token,
      client_id: this.clientId,
    })
      .then((t) => {
        this.save(t);
        return t.access_token;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /** Ends the session on the server (revokes the refresh token) and locally. */
  async signOut() {
    const t = this.tokens;
    this.tokens = null;
    sessionStorage.removeItem(STORE);
    if (t?.refresh_token) {
      await fetch('/oauth/revoke', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: t.refresh_token, client_id: this.clientId }),
      }).catch(() => {});
    }
  }
}
