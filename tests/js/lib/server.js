// Spawns the switchboard binary for one test: a free port, a fresh temp data
// dir, /healthz polling, graceful stop in the test's `after` hook.
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import jwt from 'jsonwebtoken';

const execFileP = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..', '..');

export const BIN = process.env.SWITCHBOARD_BIN || join(repoRoot, 'target', 'debug', 'switchboard');

// Environment for the server and CLI: the harness's own SWITCHBOARD_BIN is
// not a config override (the server refuses unknown SWITCHBOARD_* keys).
function serverEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  delete env.SWITCHBOARD_BIN;
  return env;
}

// The namespaces config of the brief: no --dev, so these rules are the only ones.
export const RULES_TOML = `
[token]
hmac_secret = "test-secret"

[api]
keys = ["test-key"]

[channel.defaults]
presence = true
join_leave = true
force_push_join_leave = true
history_size = 100
history_ttl = "1h"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_client = true
allow_history_for_client = true

[channel.namespaces.secret]
allow_subscribe_for_client = false

[channel.namespaces.dialog]
allow_user_limited_channels = true
allow_subscribe_for_client = true

[channel.namespaces.readonly]
allow_publish_for_client = false
allow_subscribe_for_client = true
`;

export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Server {
  constructor({ config = null, dev = true } = {}) {
    this.config = config;
    this.dev = dev;
    this.secret = config ? 'test-secret' : 'dev-token-secret';
    this.apiKey = config ? 'test-key' : 'dev-api-key';
    this.proc = null;
    this.clients = []; // SDK clients to disconnect when the test ends
    this.logs = '';
    this.exitCode = undefined;
    this.exitSignal = undefined;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  // Flags for `switchboard token create` matching this server's settings.
  get settingsArgs() {
    const args = [];
    if (this.dev) args.push('--dev');
    if (this.configPath) args.push('--config', this.configPath);
    return args;
  }

  async init() {
    this.dataDir = await mkdtemp(join(tmpdir(), 'sb-js-'));
    if (this.config) {
      this.configPath = join(this.dataDir, 'switchboard.toml');
      await writeFile(this.configPath, this.config);
    }
    this.port = await freePort();
  }

  async start() {
    if (!this.dataDir) await this.init();
    const args = ['serve', '--http-addr', `127.0.0.1:${this.port}`, '--data-dir', join(this.dataDir, 'data'), ...this.settingsArgs];
    this.exitCode = undefined;
    this.exitSignal = undefined;
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: serverEnv({ RUST_LOG: process.env.RUST_LOG || 'info' }) });
    this.proc = proc;
    this.exited = new Promise((res) => {
      proc.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        res({ code, signal });
      });
      proc.on('error', (err) => {
        this.logs += `\n[spawn error] ${err.message}\n`;
        this.exitCode = -1;
        res({ code: -1, signal: null });
      });
    });
    const append = (chunk) => {
      this.logs += chunk.toString();
      if (this.logs.length > 200_000) this.logs = this.logs.slice(-100_000);
    };
    proc.stdout.on('data', append);
    proc.stderr.on('data', append);
    await this.waitHealthy();
    return this;
  }

  async waitHealthy(timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    let lastErr = '';
    while (Date.now() < deadline) {
      if (this.exitCode !== undefined) {
        throw new Error(`switchboard exited early (code ${this.exitCode}, signal ${this.exitSignal}) ${BIN}\n--- server log ---\n${this.logs}`);
      }
      try {
        const r = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
        lastErr = `status ${r.status}`;
      } catch (e) {
        lastErr = e.message;
      }
      await sleep(50);
    }
    throw new Error(`switchboard not healthy within ${timeoutMs} ms (${lastErr})\n--- server log ---\n${this.logs}`);
  }

  // SIGTERM, wait for a graceful exit; SIGKILL after 10 s. Returns the exit status.
  async stop() {
    if (!this.proc || this.exitCode !== undefined) return { code: this.exitCode, signal: this.exitSignal };
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => {
      this.logs += '\n[test harness] no exit 10 s after SIGTERM: SIGKILL\n';
      this.proc.kill('SIGKILL');
    }, 10_000);
    const st = await this.exited;
    clearTimeout(timer);
    return st;
  }

  // Graceful stop then start on the same port and data dir; returns the exit
  // status of the stopped process.
  async restart() {
    const st = await this.stop();
    await this.start();
    return st;
  }

  async cleanup() {
    await this.stop();
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
  }

  // Server HTTP API call. Returns the parsed JSON body; throws on non-2xx.
  async api(method, body = {}) {
    const r = await fetch(`${this.httpUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': this.apiKey },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`POST /api/${method} -> HTTP ${r.status}: ${text}`);
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`POST /api/${method}: body is not JSON: ${text}`);
    }
    if (json.error) throw new Error(`POST /api/${method} -> error ${JSON.stringify(json.error)}`);
    return json;
  }

  async publish(channel, data) {
    const r = await this.api('publish', { channel, data });
    return r.result;
  }

  // HS256 connection token minted by the test itself.
  token(user, { ttl = 3600, info, channels, exp } = {}) {
    const claims = { sub: user };
    if (info !== undefined) claims.info = info;
    if (channels !== undefined) claims.channels = channels;
    claims.exp = exp !== undefined ? exp : Math.floor(Date.now() / 1000) + ttl;
    return jwt.sign(claims, this.secret, { algorithm: 'HS256', noTimestamp: false });
  }

  // HS256 subscription token minted by the test itself.
  subToken(user, channel, { ttl = 3600 } = {}) {
    return jwt.sign({ sub: user, channel, exp: Math.floor(Date.now() / 1000) + ttl }, this.secret, { algorithm: 'HS256' });
  }

  // Token minted by `switchboard token create`.
  async cliToken(args, { json = false } = {}) {
    const full = ['token', 'create', ...args, ...this.settingsArgs];
    if (json) full.push('--json');
    const { stdout } = await execFileP(BIN, full, { timeout: 15_000, env: serverEnv() });
    if (json) return JSON.parse(stdout).token;
    const lines = stdout.trim().split('\n');
    return lines[lines.length - 1].trim();
  }
}

// Wraps a test body: starts a server (opts), runs body(t, server), and always
// stops the server and removes its data dir. A failure carries the tail of the
// server log so the reason is visible in the test report.
export function withServer(opts, body) {
  return async (t) => {
    const server = new Server(opts);
    try {
      await server.start();
      await body(t, server);
    } catch (e) {
      if (e && typeof e === 'object') {
        const tail = server.logs.slice(-6000);
        try {
          e.message = `${e.message}\n--- switchboard log (tail) ---\n${tail}`;
        } catch {
          /* read-only message */
        }
      }
      throw e;
    } finally {
      for (const c of server.clients) {
        try {
          c.disconnect();
        } catch {
          /* already gone */
        }
      }
      await server.cleanup();
    }
  };
}
