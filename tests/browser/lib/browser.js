// Headless Debian Chromium driven by playwright-core, the static server of
// the test page, and a Participant wrapper around one browser context.
import { mkdtemp, readFile, rm, access, constants } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { waitFor } from './server.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

// Debian's real binary (/usr/bin/chromium is a wrapper script that adds flags).
export const CHROMIUM = process.env.SB_CHROMIUM || '/usr/lib/chromium/chromium';

const FILES = {
  '/': ['page/index.html', 'text/html; charset=utf-8'],
  '/index.html': ['page/index.html', 'text/html; charset=utf-8'],
  '/sdk.js': ['page/sdk.js', 'text/javascript; charset=utf-8'],
};

// Serves the test page on 127.0.0.1 (a secure context, so getUserMedia
// works) and, as /switchboard.js, the browser SDK bundle the switchboard
// at `server` embeds (its /sdk/switchboard.js): the tests run the SDK the
// binary ships.
export function servePage(server) {
  const srv = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    try {
      if (path === '/switchboard.js') {
        const r = await fetch(`${server.httpUrl}/sdk/switchboard.js`, { signal: AbortSignal.timeout(5000) });
        const body = Buffer.from(await r.arrayBuffer());
        if (!r.ok || !/javascript/.test(r.headers.get('content-type') || '')) {
          res.writeHead(502).end(`the switchboard serves no SDK bundle at /sdk/switchboard.js (HTTP ${r.status}): build sdk/js before the binary`);
          return;
        }
        res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-store' }).end(body);
        return;
      }
      const entry = FILES[path];
      if (!entry) {
        res.writeHead(404).end('not found');
        return;
      }
      const body = await readFile(join(root, entry[0]));
      res.writeHead(200, { 'Content-Type': entry[1], 'Cache-Control': 'no-store' }).end(body);
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  return new Promise((res) => {
    srv.listen(0, '127.0.0.1', () => {
      res({ url: `http://127.0.0.1:${srv.address().port}/`, close: () => new Promise((r) => srv.close(r)) });
    });
  });
}

export async function launchChromium() {
  try {
    await access(CHROMIUM, constants.X_OK);
  } catch {
    throw new Error(`Chromium not found at ${CHROMIUM}: install the Debian package "chromium" (scripts/test does)`);
  }
  const profile = await mkdtemp(join(tmpdir(), 'sb-chromium-'));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    ignoreDefaultArgs: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--remote-debugging-pipe',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--allow-loopback-in-peer-connection',
      `--user-data-dir=${profile}`,
    ],
  });
  const close = async () => {
    await browser.close().catch(() => {});
    await rm(profile, { recursive: true, force: true });
  };
  return { browser, close };
}

// One call participant: its own browser context and page.
export class Participant {
  constructor(name, page, context) {
    this.name = name;
    this.page = page;
    this.context = context;
    this.console = [];
    page.on('console', (m) => {
      this.console.push(`[${m.type()}] ${m.text()}`);
      if (this.console.length > 200) this.console.shift();
    });
    page.on('pageerror', (e) => this.console.push(`[pageerror] ${e.message}`));
  }

  static async open(browser, pageUrl, name) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const p = new Participant(name, page, context);
    await page.goto(pageUrl);
    try {
      await page.waitForFunction(() => window.sb && window.Centrifuge, null, { timeout: 15000 });
    } catch (e) {
      throw new Error(`the test page did not load the SDK: ${e.message}\n${p.console.join('\n')}`);
    }
    return p;
  }

  // Connects as `user` and joins `room`; returns {participant, mode}.
  async join(server, room, opts = {}) {
    await this.page.evaluate((a) => window.sb.connect(a), { url: server.wsUrl, token: server.token(this.name) });
    const r = await this.page.evaluate((a) => window.sb.join(a), { room, ...opts });
    this.id = r.participant;
    return r;
  }

  sb(expr) {
    return this.page.evaluate(expr);
  }

  inbound() {
    return this.page.evaluate(() => window.sb.inboundStats());
  }

  selectedPairs() {
    return this.page.evaluate(() => window.sb.selectedPairs());
  }

  events(type) {
    return this.page.evaluate((t) => window.sb.events.filter((e) => e.type === t), type);
  }

  async errors() {
    return this.page.evaluate(() => window.sb.errors);
  }

  // A short picture of the page's state for failure messages.
  async describe() {
    try {
      return await this.page.evaluate(async () => ({
        participant: window.sb.participant,
        mode: window.sb.mode,
        participants: window.sb.participants,
        states: window.sb.states,
        errors: window.sb.errors,
        events: window.sb.events.map((e) => e.type),
        inbound: await window.sb.inboundStats(),
      }));
    } catch (e) {
      return { unavailable: String(e) };
    }
  }

  leave() {
    return this.page.evaluate(() => window.sb.leave());
  }

  async close() {
    await this.context.close().catch(() => {});
  }
}

// Waits until `viewer` decodes video and receives audio from each of
// `senders` over `via` ('sfu' | 'p2p'), and both keep rising: a later sample
// strictly above the first for every sender.
export async function expectMediaFrom(viewer, senders, via, { timeoutMs = 30000 } = {}) {
  const names = senders.map((s) => s.name).join(', ');
  const get = (st, s) => st[s.id]?.[via];
  const flowing = (st) => senders.every((s) => get(st, s) && get(st, s).framesDecoded > 0 && get(st, s).audioBytes > 0);
  let last = null;
  const first = await waitFor(
    `${viewer.name} to decode video and receive audio from ${names} via ${via}`,
    async () => {
      last = await viewer.inbound();
      return flowing(last) ? last : null;
    },
    { timeoutMs, describe: () => viewer.describe() },
  );
  await waitFor(
    `${viewer.name}: framesDecoded and audio bytes rising from ${names} via ${via}`,
    async () => {
      last = await viewer.inbound();
      return (
        flowing(last) &&
        senders.every((s) => get(last, s).framesDecoded > get(first, s).framesDecoded && get(last, s).audioBytes > get(first, s).audioBytes)
      );
    },
    { timeoutMs: 15000, describe: () => ({ before: first, now: last }) },
  );
  return last;
}
