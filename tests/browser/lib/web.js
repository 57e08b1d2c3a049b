// Fixture for the embedded demo app (`/`) and dashboard (`/dashboard`): one
// switchboard --dev, one Chromium per test; users sign in through the
// server's OAuth login page in their own browser context. A failure carries
// each page's console and the server log tail.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './browser.js';
import { Switchboard, waitFor } from './server.js';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '..', '..', '..');
export const IMAGES = join(REPO, 'docs', 'images');
export const PASSWORD = 'switchboard-dev';
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export function webTest(body, opts = {}) {
  return async (t) => {
    const server = new Switchboard(opts);
    const users = [];
    let chromium = null;
    try {
      await server.start();
      // The pages must be the built ones, not the "build the assets" page.
      const home = await fetch(`${server.httpUrl}/`).then((r) => r.text());
      if (!home.includes('/assets/demo.js')) {
        throw new Error('the binary has no web assets: build sdk/js and web (npm run build) before cargo build -p switchboard-server');
      }
      chromium = await launchChromium();
      // Opens a browser context for `name` and signs in on `path`.
      const signIn = async (name, { path = '/', viewport = DESKTOP, setup = null } = {}) => {
        const u = await WebUser.open(chromium.browser, server, name, { viewport, setup });
        users.push(u);
        await u.signIn(path);
        return u;
      };
      await body({ t, server, signIn, browser: chromium.browser, users });
      for (const u of users) {
        if (u.pageErrors.length) throw new Error(`${u.name}'s page threw: ${u.pageErrors.join('\n')}`);
      }
    } catch (e) {
      const pages = {};
      for (const u of users) pages[u.name] = { url: u.page.url(), console: u.console.slice(-25) };
      e.message = `${e.message}\n--- pages ---\n${JSON.stringify(pages, null, 1)}\n--- switchboard log (tail) ---\n${server.logs.slice(-5000)}`;
      throw e;
    } finally {
      for (const u of users) await u.context.close().catch(() => {});
      if (chromium) await chromium.close();
      await server.stop();
    }
  };
}

export class WebUser {
  constructor(name, server, context, page) {
    this.name = name;
    this.server = server;
    this.context = context;
    this.page = page;
    this.console = [];
    this.pageErrors = [];
    page.on('console', (m) => {
      this.console.push(`[${m.type()}] ${m.text()}`);
      if (this.console.length > 200) this.console.shift();
    });
    page.on('pageerror', (e) => {
      this.console.push(`[pageerror] ${e.message}`);
      this.pageErrors.push(e.message);
    });
    page.on('response', (r) => {
      if (r.status() >= 400) this.console.push(`[http ${r.status()}] ${r.url()}`);
    });
  }

  static async open(browser, server, name, { viewport = DESKTOP, setup = null } = {}) {
    const context = await browser.newContext({ viewport, reducedMotion: 'reduce' });
    if (setup) await setup(context);
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    return new WebUser(name, server, context, page);
  }

  // The "Sign in" button of the page → the server's /oauth/authorize login
  // form → back on `path`, signed in.
  async signIn(path = '/') {
    const { page, server } = this;
    await page.goto(`${server.httpUrl}${path}`);
    await page.getByRole('button', { name: /^Sign in/ }).click();
    await page.waitForURL((u) => u.pathname.startsWith('/oauth/'));
    await page.getByLabel('Username').fill(this.name);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(`${server.httpUrl}${path}`);
    if (path === '/') {
      await page.getByText(`Signed in as ${this.name}`).waitFor();
      await this.connected();
    }
  }

  connected(timeout = 15000) {
    return this.page.locator('#conn-status', { hasText: /^connected$/ }).waitFor({ timeout });
  }

  async joinRoom(room) {
    const { page } = this;
    await page.getByLabel('Room name').fill(room);
    await page.getByRole('button', { name: 'Join room', exact: true }).click();
    await page.locator('#room').waitFor();
    await page.locator('#room-title', { hasText: room }).waitFor();
  }

  message() {
    return this.page.getByLabel('Message', { exact: true });
  }

  async say(text) {
    await this.message().fill(text);
    await this.page.getByRole('button', { name: 'Send' }).click();
    // Sent (published) when the input is cleared.
    await waitFor(`${this.name}'s message "${text}" to be sent`, async () => (await this.message().inputValue()) === '', {
      timeoutMs: 10000,
    });
  }

  // Texts of the chat list, in order.
  chat() {
    return this.page.locator('#messages li').allTextContents();
  }

  // Frames decoded so far by each remote <video> in the grid, by its label
  // ("bob's camera", "bob's screen").
  remoteVideos() {
    return this.page.evaluate(() =>
      Object.fromEntries(
        [...document.querySelectorAll('#grid .tile:not([data-participant="local"]) video')].map((v) => [
          v.getAttribute('aria-label'),
          { frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight, hidden: v.hidden },
        ]),
      ),
    );
  }

  // Waits until the remote video labelled `label` plays: frames decoded,
  // then more frames a moment later.
  async expectVideo(label, timeoutMs = 30000) {
    let last = null;
    const first = await waitFor(
      `${this.name} to play ${label}`,
      async () => {
        last = await this.remoteVideos();
        const v = last[label];
        return v && !v.hidden && v.frames > 0 && v.width > 0 ? v : null;
      },
      { timeoutMs, describe: () => last },
    );
    await waitFor(
      `${this.name}: frames of ${label} rising`,
      async () => {
        last = await this.remoteVideos();
        return last[label] && last[label].frames > first.frames + 5;
      },
      { timeoutMs: 15000, describe: () => ({ first, now: last }) },
    );
    return last[label];
  }
}
