// Spawns the switchboard binary for one test (same approach as
// tests/js/lib/server.js): --dev, free ports, a fresh temp data dir, an
// optional extra config file, /healthz polling, graceful stop.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { access, constants, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..', '..');

export const BIN = process.env.SWITCHBOARD_BIN || join(repoRoot, 'target', 'debug', 'switchboard');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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

// Polls `fn` until it returns a truthy value (returned). After `timeoutMs`
// throws, naming `what` and the state `describe()` reports.
export async function waitFor(what, fn, { timeoutMs = 20000, intervalMs = 250, describe = null } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      const state = describe ? await describe() : undefined;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state === undefined ? '' : `; state: ${JSON.stringify(state, null, 1)}`}`);
    }
    await sleep(intervalMs);
  }
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

export class Switchboard {
  // config: extra TOML (on top of --dev), e.g. a [media.turn] section.
  constructor({ config = null } = {}) {
    this.config = config;
    this.apiKey = 'dev-api-key';
    this.secret = 'dev-token-secret';
    this.logs = '';
    this.proc = null;
    this.exitCode = undefined;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    try {
      await access(BIN, constants.X_OK);
    } catch {
      throw new Error(`switchboard binary not found at ${BIN}: build it (cargo build -p switchboard-server) or set SWITCHBOARD_BIN`);
    }
    this.dir = await mkdtemp(join(tmpdir(), 'sb-browser-'));
    this.port = await freePort();
    return this.spawn();
  }

  // Starts the process on this.port and this.dir (again, after kill()).
  async spawn() {
    this.exitCode = undefined;
    const args = ['serve', '--dev', '--http-addr', `127.0.0.1:${this.port}`, '--data-dir', join(this.dir, 'data')];
    if (this.config) {
      const path = join(this.dir, 'switchboard.toml');
      await writeFile(path, this.config);
      args.push('--config', path);
    }
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
    delete env.SWITCHBOARD_BIN; // not a config override (unknown SWITCHBOARD_* keys are refused)
    const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.proc = proc;
    this.exited = new Promise((res) => {
      proc.on('exit', (code, signal) => {
        this.exitCode = code ?? signal;
        res();
      });
      proc.on('error', (e) => {
        this.logs += `\n[spawn error] ${e.message}\n`;
        this.exitCode = -1;
        res();
      });
    });
    const append = (chunk) => {
      this.logs += chunk.toString();
      if (this.logs.length > 200000) this.logs = this.logs.slice(-100000);
    };
    proc.stdout.on('data', append);
    proc.stderr.on('data', append);
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (this.exitCode !== undefined) throw new Error(`switchboard exited early (${this.exitCode})\n${this.logs}`);
      try {
        const r = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return this;
      } catch {
        /* not up yet */
      }
      await sleep(50);
    }
    throw new Error(`switchboard not healthy within 20 s\n${this.logs}`);
  }

  // Stops the process (SIGTERM: a graceful drain), keeping its data dir
  // and port for spawn().
  async kill(signal = 'SIGTERM') {
    if (!this.proc || this.exitCode !== undefined) return;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    await this.exited;
    clearTimeout(timer);
  }

  async stop() {
    if (this.proc && this.exitCode === undefined) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(timer);
    }
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  // The SFU's UDP port, from the startup log ("media listening udp=IP:PORT").
  mediaPort() {
    const plain = this.logs.replace(/\x1b\[[0-9;]*m/g, '');
    const m = plain.match(/media listening udp=[^\s]*:(\d+)/);
    if (!m) throw new Error(`no "media listening" line in the switchboard log:\n${plain.slice(0, 3000)}`);
    return Number(m[1]);
  }

  // Server API call; returns the parsed body, throws on HTTP or API errors.
  async api(method, body = {}) {
    const r = await fetch(`${this.httpUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': this.apiKey },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`POST /api/${method} -> HTTP ${r.status}: ${text}`);
    const json = JSON.parse(text);
    if (json.error) throw new Error(`POST /api/${method} -> error ${JSON.stringify(json.error)}`);
    return json;
  }

  // HS256 connection token for `user` (the --dev token secret).
  token(user, ttl = 3600) {
    const head = b64url({ alg: 'HS256', typ: 'JWT' });
    const body = b64url({ sub: user, exp: Math.floor(Date.now() / 1000) + ttl });
    const sig = createHmac('sha256', this.secret).update(`${head}.${body}`).digest('base64url');
    return `${head}.${body}.${sig}`;
  }
}
