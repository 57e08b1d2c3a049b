// Manual real-browser smoke check of the built SDK (dist/switchboard.js):
// headless Chromium pages join rooms on a real switchboard binary and report
// what they receive. Borrows the server/browser helpers of tests/browser
// (run `npm ci` there, build the binary). Usage, from sdk/js after `npm run build`:
//   node smoke/run.mjs rooms sfu|p2p|auto [third]   two (or three) participants, frames decoded
//   node smoke/run.mjs mute sfu|p2p                  mute, screen share, unpublish, leave
//   node smoke/run.mjs reconnect sfu|p2p             server API disconnect → rejoin
//   node smoke/run.mjs call                          1:1 ring and accept (needs ringing in the server)
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..', '..');
const { Switchboard, sleep } = await import(join(repo, 'tests/browser/lib/server.js'));
const { launchChromium } = await import(join(repo, 'tests/browser/lib/browser.js'));

const FILES = {
  '/': [join(here, 'page.html'), 'text/html'],
  '/sdk/switchboard.js': [join(here, '..', 'dist', 'switchboard.js'), 'text/javascript'],
};
const srv = createServer(async (req, res) => {
  const f = FILES[new URL(req.url, 'http://x').pathname];
  if (!f) return res.writeHead(404).end();
  res.writeHead(200, { 'Content-Type': f[1] }).end(await readFile(f[0]));
});
await new Promise((r) => srv.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${srv.address().port}/`;
const server = await new Switchboard().start();
const chromium = await launchChromium();
const [scenario = 'rooms', mode = 'sfu', extra] = process.argv.slice(2);
const room = `smoke-${scenario}-${mode}`;
const pages = {};
const show = (v) => JSON.stringify(v);

async function open(name, fn = 'run') {
  const ctx = await chromium.browser.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] pageerror ${e.message}`));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.run);
  const r = await page.evaluate(([f, a]) => window[f](a), [fn, { url: server.wsUrl, token: server.token(name), room }]);
  console.log(name, 'joined', show(r));
  pages[name] = page;
  return page;
}
const frames = async () => {
  for (const [n, p] of Object.entries(pages)) console.log(n, show(await p.evaluate(() => window.frames())));
};
const events = async () => {
  const all = !!process.env.SMOKE_ALL_EVENTS; // include quality and speaker reports
  for (const [n, p] of Object.entries(pages)) console.log(n, 'events', show(await p.evaluate((a) => window.log.filter((l) => a || !/quality|speakers/.test(l)), all)));
};
const tracks = (name) => pages[name].evaluate(() => window.room.tracks.map((t) => `${t.participant.slice(0, 6)}/${t.source}/muted=${t.muted}/media=${!!t.mediaTrack}`));

try {
  if (scenario !== 'call') await server.api('room_create', { room, mode });
  if (scenario === 'rooms') {
    await open('alice');
    await open('bob');
    await sleep(5000);
    await frames();
    if (extra === 'third') {
      await open('carol');
      await sleep(8000);
      await frames();
    }
    await events();
  } else if (scenario === 'mute') {
    await open('alice');
    await open('bob');
    await sleep(3000);
    await pages.alice.evaluate(() => window.room.mute(window.room.localTracks.find((t) => t.kind === 'audio')));
    await pages.bob.evaluate(() => window.room.publishScreen());
    await sleep(4000);
    console.log('bob sees', await tracks('bob'));
    console.log('alice sees', await tracks('alice'));
    await pages.bob.evaluate(() => window.room.unpublish(window.room.localTracks.find((t) => t.source === 'screen')));
    await sleep(2000);
    console.log('alice after unpublish', await tracks('alice'));
    await pages.bob.evaluate(() => window.room.leave());
    await sleep(1500);
    console.log('alice after bob left', await tracks('alice'));
  } else if (scenario === 'reconnect') {
    await open('alice');
    await open('bob');
    await sleep(3000);
    await frames();
    await server.api('disconnect', { user: 'bob', disconnect: { code: 3001, reason: 'smoke', reconnect: true } });
    await sleep(7000);
    await frames();
    await events();
  } else if (scenario === 'call') {
    await open('alice', 'connectOnly');
    await open('bob', 'connectOnly');
    console.log('dial', show(await pages.alice.evaluate(() => window.dial('bob'))));
    await sleep(5000);
    await events();
  }
} finally {
  await chromium.close();
  await server.stop();
  srv.close();
}
