// Manual smoke check of the embedded demo app and dashboard in headless
// Chromium (fake camera and microphone): alice and bob sign in through the
// OAuth login and meet in a room, chat, then the admin opens the dashboard.
// Saves docs/images/demo-app.png and docs/images/dashboard.png.
// Borrows tests/browser's helpers (run `npm ci` there) and the debug binary
// (cargo build -p switchboard-server after `npm run build` here).
//   node smoke/run.mjs
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const { Switchboard, sleep } = await import(join(repo, 'tests/browser/lib/server.js'));
const { launchChromium } = await import(join(repo, 'tests/browser/lib/browser.js'));

const server = await new Switchboard().start();
const chromium = await launchChromium();
const base = server.httpUrl;
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

async function signIn(name, path, viewport = { width: 1280, height: 800 }) {
  const ctx = await chromium.browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] pageerror ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && console.log(`[${name}] console ${m.text()}`));
  page.on('response', (r) => r.status() >= 400 && console.log(`[${name}] HTTP ${r.status()} ${r.url()}`));
  await page.goto(`${base}${path}`);
  await page.getByRole('button', { name: /^Sign in/ }).click();
  await page.getByLabel('Username').fill(name);
  await page.getByLabel('Password').fill('switchboard-dev');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}${path}`);
  return page;
}

try {
  // An SFU room, so the dashboard has media figures to draw.
  const created = await fetch(`${base}/api/room_create`, {
    method: 'POST',
    headers: { 'X-API-Key': 'dev-api-key' },
    body: JSON.stringify({ room: 'standup', mode: 'sfu' }),
  }).then((r) => r.json());
  check(!created.error, `room_create standup (sfu): ${JSON.stringify(created)}`);

  // --- demo app ---
  const alice = await signIn('alice', '/');
  await alice.getByText('Signed in as alice').waitFor();
  check(true, 'alice signed in');
  await alice.getByText('connected', { exact: true }).waitFor();
  await alice.getByLabel('Room name').fill('standup');
  await alice.getByRole('button', { name: 'Join room' }).click();
  await alice.locator('#room').waitFor();
  check(await alice.locator('#room-title').textContent() === 'standup', 'alice is in the room page');

  const bob = await signIn('bob', '/', { width: 390, height: 844 });
  await bob.getByRole('button', { name: 'Join room standup' }).click();
  await bob.locator('#room').waitFor();
  await alice.getByLabel('Message', { exact: true }).fill('Hello from alice');
  await alice.getByRole('button', { name: 'Send' }).click();
  await bob.getByText('Hello from alice').waitFor({ timeout: 10000 });
  check(true, 'bob got alice\'s chat message');
  await bob.getByLabel('Message', { exact: true }).pressSequentially('Hi al', { delay: 50 });
  await alice.getByText('bob is typing…').waitFor({ timeout: 10000 });
  check(true, 'alice sees bob typing');
  await bob.getByLabel('Message', { exact: true }).pressSequentially('ice!');
  await bob.getByRole('button', { name: 'Send' }).click();
  const frames = async (page) =>
    page.evaluate(() =>
      [...document.querySelectorAll('#grid video')].map((v) => v.getVideoPlaybackQuality?.().totalVideoFrames || 0),
    );
  let decoded = [];
  for (let i = 0; i < 40; i++) {
    decoded = await frames(alice);
    if (decoded.length >= 2 && decoded.every((n) => n > 5)) break;
    await sleep(250);
  }
  check(decoded.length >= 2 && decoded.every((n) => n > 5), `alice's grid plays two videos (frames ${decoded})`);
  await alice.getByText('Hi alice!').waitFor();
  await sleep(1500);
  await alice.screenshot({ path: join(repo, 'docs/images/demo-app.png') });
  await bob.screenshot({ path: join(repo, 'docs/images/demo-app-phone.png') });
  console.log('saved docs/images/demo-app.png, demo-app-phone.png');

  // --- dashboard ---
  const admin = await signIn('admin', '/dashboard', { width: 1280, height: 1000 });
  await admin.locator('#dash').waitFor();
  await admin.getByText('live', { exact: true }).waitFor();
  await admin.locator('.chart canvas').first().waitFor();
  const charts = await admin.locator('.chart canvas').count();
  check(charts === 6, `dashboard draws ${charts} charts`);
  for (let i = 0; i < 8; i++) {
    await alice.getByLabel('Message', { exact: true }).fill(`status update ${i}`);
    await alice.getByRole('button', { name: 'Send' }).click();
    await sleep(1000);
  }
  const points = await admin.evaluate(() => document.querySelector('#chart-conn .plot').getAttribute('aria-label'));
  check(/Connections \d/.test(points) && !/waiting/.test(points), `charts follow the stats channel (${points})`);
  const rooms = await admin.locator('#rooms tr').count();
  check(rooms >= 1, `rooms list shows ${rooms} room(s)`);
  await admin.screenshot({ path: join(repo, 'docs/images/dashboard.png'), fullPage: true });
  console.log('saved docs/images/dashboard.png');

  // End the room from the dashboard: alice goes back to the lobby.
  admin.on('dialog', (d) => d.accept());
  await admin.getByRole('button', { name: 'End room standup' }).click();
  await alice.locator('#lobby').waitFor({ timeout: 10000 });
  check(true, 'ending the room from the dashboard sends alice back to the lobby');
  await bob.locator('#lobby').waitFor({ timeout: 10000 });

  // 1:1 call: alice rings bob, bob accepts, both see the call room.
  await alice.getByRole('button', { name: 'Call bob' }).click();
  await bob.getByRole('dialog', { name: 'Incoming call' }).waitFor({ timeout: 10000 });
  check(await bob.getByText('alice is calling you.').isVisible(), 'bob is rung by alice');
  await bob.getByRole('button', { name: 'Accept' }).click();
  await alice.getByRole('heading', { name: 'Call with bob' }).waitFor({ timeout: 15000 });
  await bob.getByRole('heading', { name: 'Call with alice' }).waitFor({ timeout: 15000 });
  let callFrames = [];
  for (let i = 0; i < 40; i++) {
    callFrames = await frames(bob);
    if (callFrames.length >= 2 && callFrames.every((n) => n > 5)) break;
    await sleep(250);
  }
  check(callFrames.length >= 2 && callFrames.every((n) => n > 5), `the call plays both videos for bob (frames ${callFrames})`);
} catch (e) {
  failures.push(e.message);
  console.log(`FAIL ${e.message}`);
} finally {
  await chromium.close();
  await server.stop();
}
console.log(failures.length ? `${failures.length} failure(s)` : 'all good');
process.exit(failures.length ? 1 : 0);
