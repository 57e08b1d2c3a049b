// Accessibility: axe-core (npm @axe-core/playwright, WCAG 2 A/AA rules and
// best practices) on the demo app signed out, in the lobby, in a room with
// video, chat and a shared screen, at desktop and phone size, the incoming
// call dialog, the OAuth login page and the dashboard: no serious or
// critical violations, and every control has an accessible name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AxeBuilder } from '@axe-core/playwright';
import { PHONE, WebUser, webTest } from '../lib/web.js';

async function expectAccessible(page, where) {
  const { violations } = await new AxeBuilder({ page })
    .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'])
    .analyze();
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
    [],
    `${where}: axe found serious or critical violations`,
  );
  // Every visible control is named (buttons, inputs, links).
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea, a[href], [role="button"]')]
      .filter((el) => el.offsetParent !== null || el.getClientRects().length)
      .filter((el) => {
        const label = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.labels?.[0]?.textContent || el.textContent || el.title;
        return !label || !label.trim();
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unnamed, [], `${where}: controls without a name`);
}

test(
  'accessibility: demo app (signed out, login page, lobby, room, phone, call dialog) and dashboard pass axe-core',
  webTest(async ({ server, browser, signIn, users }) => {
    // Signed out, and the server's login page.
    const guest = await WebUser.open(browser, server, 'guest');
    users.push(guest);
    await guest.page.goto(`${server.httpUrl}/`);
    await guest.page.getByRole('button', { name: /^Sign in/ }).waitFor();
    await expectAccessible(guest.page, 'signed-out page');
    await guest.page.getByRole('button', { name: /^Sign in/ }).click();
    await guest.page.getByLabel('Username').waitFor();
    await expectAccessible(guest.page, 'OAuth login page');

    const alice = await signIn('alice');
    const bob = await signIn('bob', { viewport: PHONE });
    await alice.page.locator('#people li', { hasText: 'bob' }).waitFor();
    await expectAccessible(alice.page, 'lobby');

    await alice.joinRoom('a11y');
    await bob.joinRoom('a11y');
    await alice.expectVideo("bob's camera");
    await bob.say('hello');
    await alice.page.locator('#messages li', { hasText: 'hello' }).waitFor();
    await alice.page.getByRole('button', { name: 'Share screen' }).click();
    await bob.page.locator('#grid figure[aria-label="alice: screen"]').waitFor();
    await expectAccessible(alice.page, 'room (desktop)');
    await expectAccessible(bob.page, 'room (phone)');

    // The incoming-call dialog (bob back in the lobby).
    await bob.page.getByRole('button', { name: 'Leave room' }).click();
    await bob.page.locator('#lobby').waitFor();
    await alice.page.getByRole('button', { name: 'Leave room' }).click();
    await alice.page.getByRole('button', { name: 'Call bob' }).click();
    await bob.page.getByRole('dialog', { name: 'Incoming call' }).waitFor();
    await expectAccessible(bob.page, 'incoming call dialog');
    await bob.page.getByRole('button', { name: 'Decline' }).click();

    const admin = await signIn('admin', { path: '/dashboard' });
    await admin.page.locator('#conn-status', { hasText: 'live' }).waitFor();
    await admin.page.locator('#charts canvas').first().waitFor();
    await admin.page.locator('#nodes tr').first().waitFor();
    await expectAccessible(admin.page, 'dashboard');
    await admin.page.setViewportSize(PHONE);
    await expectAccessible(admin.page, 'dashboard (phone)');
  }),
);
