// The operator dashboard at `/dashboard` in a real browser: the admin signs
// in through the OAuth login, the charts draw the live stats channel and
// move while alice and bob talk in an SFU room, the room list shows the
// room, "end room" and "disconnect a user" act on the users' pages. Saves
// docs/images/dashboard.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createRoom } from '../lib/rooms.js';
import { sleep, waitFor } from '../lib/server.js';
import { IMAGES, webTest } from '../lib/web.js';

// What the page shows of each chart: its accessible summary ("…, latest:
// …") and a hash of its canvas pixels.
const charts = (page) =>
  page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('#charts figure.chart')].map((f) => {
        const canvas = f.querySelector('canvas');
        const url = canvas ? canvas.toDataURL() : '';
        let h = 0;
        for (let i = 0; i < url.length; i++) h = (h * 31 + url.charCodeAt(i)) | 0;
        return [f.id.replace('chart-', ''), { label: f.querySelector('.plot').getAttribute('aria-label'), pixels: h }];
      }),
    ),
  );

const figure = (page, name) =>
  page.evaluate((n) => {
    for (const div of document.querySelectorAll('#now > div')) {
      if (div.querySelector('dt').textContent === n) return div.querySelector('dd').textContent;
    }
    return null;
  }, name);

test(
  'dashboard: live charts move with the traffic, the room list shows the room, end a room, disconnect a user',
  webTest(async ({ server, signIn }) => {
    await createRoom(server, 'standup', 'sfu');
    const [alice, bob] = await Promise.all([signIn('alice'), signIn('bob')]);
    await alice.joinRoom('standup');
    await bob.joinRoom('standup');
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);

    const admin = await signIn('admin', { path: '/dashboard', viewport: { width: 1280, height: 1000 } });
    const page = admin.page;
    await page.locator('#dash').waitFor();
    await page.locator('#conn-status', { hasText: 'live' }).waitFor();
    await waitFor('six charts drawn', async () => (await page.locator('#charts canvas').count()) === 6, { timeoutMs: 10000 });

    // The live figures: three people connected, one room with two in it,
    // media through the SFU.
    await waitFor(
      'the live figures to show the room',
      async () =>
        (await figure(page, 'Connections')) === '3' &&
        (await figure(page, 'Rooms')) === '1' &&
        (await figure(page, 'Participants')) === '2' &&
        !['–', '0 kb/s'].includes(await figure(page, 'Media in')),
      { timeoutMs: 15000, describe: async () => page.locator('#now').innerText() },
    );

    // Traffic: chat for a few seconds. The message-rate chart follows it
    // and every chart redraws.
    const before = await charts(page);
    const seen = new Set();
    for (let i = 0; i < 6; i++) {
      await alice.say(`status update ${i}`);
      await sleep(500);
      seen.add((await charts(page)).msgs.label);
    }
    let after = null;
    await waitFor(
      'every chart to redraw',
      async () => {
        after = await charts(page);
        return Object.keys(before).every((k) => after[k].pixels !== before[k].pixels);
      },
      { timeoutMs: 10000, describe: () => ({ before, after }) },
    );
    const rate = (label, name) => Number(label.match(new RegExp(`${name} ([\\d.,]+)`))?.[1].replace(/,/g, '') ?? NaN);
    const labels = [...seen];
    assert.ok(labels.length >= 2, `the message rates changed while chatting: ${labels}`);
    assert.ok(labels.some((l) => rate(l, 'Publications') > 0 && rate(l, 'In \\(commands\\)') > 0), `publications seen: ${labels}`);
    assert.match(after.rooms.label, /Rooms 1, Participants 2/);
    assert.match(after.conn.label, /Connections 3/);
    assert.ok(rate(after.bitrate.label, 'Into the SFU') > 0, after.bitrate.label);

    // Lists: the room with its two participants, the channels, this node.
    const row = page.locator('#rooms tr', { hasText: 'standup' });
    await row.waitFor();
    await waitFor('the room row to count 2 participants', async () => (await row.locator('td').nth(2).textContent()) === '2', {
      timeoutMs: 10000,
    });
    await page.locator('#channels tr', { hasText: 'chat:standup' }).waitFor();
    assert.equal(await page.locator('#nodes tr').count(), 1);

    await sleep(1500);
    await page.screenshot({ path: join(IMAGES, 'dashboard.png'), fullPage: true });

    // End the room: both are sent back to the lobby and told; the row goes.
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: 'End room standup' }).click();
    for (const u of [alice, bob]) {
      await u.page.locator('#lobby').waitFor();
      await u.page.locator('#toast', { hasText: 'The room was ended.' }).waitFor();
    }
    await row.waitFor({ state: 'detached' });
    await page.locator('#rooms-empty').waitFor();

    // Disconnect bob (the server API's default: no reconnect): his page says
    // so, alice stays connected, and a reload brings bob back.
    await page.getByLabel('User id or username').fill('bob');
    await page.getByRole('button', { name: 'Disconnect' }).click();
    await page.locator('#toast', { hasText: 'Disconnected bob.' }).waitFor();
    await bob.page.locator('#conn-status', { hasText: /^disconnected/ }).waitFor();
    await alice.page.locator('#people li', { hasText: 'bob' }).waitFor({ state: 'detached' });
    assert.equal(await alice.page.locator('#conn-status').textContent(), 'connected');
    await bob.page.reload();
    await bob.connected();
    await alice.page.locator('#people li', { hasText: 'bob' }).waitFor();
  }),
);
