// A real coturn (Debian package "coturn") for one test: TURN REST
// credentials (use-auth-secret), UDP on 127.0.0.1 on a free port, relaying
// to loopback peers (the SFU listens on 127.0.0.1).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { access, constants, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep } from './server.js';

export const TURNSERVER = process.env.SB_TURNSERVER || '/usr/bin/turnserver';

// One STUN binding request to 127.0.0.1:port; resolves true on a binding
// success response.
function stunPing(port, timeoutMs = 500) {
  return new Promise((res) => {
    const sock = createSocket('udp4');
    const tid = randomBytes(12);
    const req = Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), tid]);
    const done = (ok) => {
      clearTimeout(timer);
      sock.close();
      res(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('message', (m) => done(m.length >= 20 && m.readUInt16BE(0) === 0x0101 && m.subarray(8, 20).equals(tid)));
    sock.on('error', () => done(false));
    sock.send(req, port, '127.0.0.1');
  });
}

export async function startCoturn() {
  try {
    await access(TURNSERVER, constants.X_OK);
  } catch {
    throw new Error(`coturn not found at ${TURNSERVER}: install the Debian package "coturn" (scripts/test does)`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'sb-coturn-'));
  const port = await freePort(); // free on TCP; coturn listens on UDP and TCP
  const secret = randomBytes(16).toString('hex');
  const logFile = join(dir, 'turn.log');
  const args = [
    '-n', // no configuration file
    '--listening-ip', '127.0.0.1',
    '--relay-ip', '127.0.0.1',
    '--listening-port', String(port),
    '--min-port', '40000',
    '--max-port', '49999',
    '--use-auth-secret',
    '--static-auth-secret', secret,
    '--realm', 'switchboard.test',
    '--allow-loopback-peers',
    '--no-cli',
    '--no-tls',
    '--no-dtls',
    '--fingerprint',
    '--log-file', logFile,
    '--simple-log',
    '--pidfile', join(dir, 'turn.pid'),
  ];
  let out = '';
  let exit;
  const proc = spawn(TURNSERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((res) => {
    proc.on('exit', (code, signal) => {
      exit = code ?? signal;
      res();
    });
    proc.on('error', (e) => {
      out += `[spawn error] ${e.message}\n`;
      exit = -1;
      res();
    });
  });
  const append = (c) => {
    out += c.toString();
    if (out.length > 100000) out = out.slice(-50000);
  };
  proc.stdout.on('data', append);
  proc.stderr.on('data', append);

  const turn = {
    port,
    secret,
    url: `turn:127.0.0.1:${port}?transport=udp`,
    async log() {
      const file = await readFile(logFile, 'utf8').catch(() => '');
      return `${out}\n${file}`;
    },
    async stop() {
      if (exit === undefined) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if (exit !== undefined) throw new Error(`turnserver exited early (${exit}): ${await turn.log()}`);
    if (await stunPing(port)) return turn;
    await sleep(100);
  }
  const log = await turn.log();
  await turn.stop();
  throw new Error(`turnserver did not answer STUN on 127.0.0.1:${port} within 10 s: ${log}`);
}
