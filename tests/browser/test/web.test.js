// The demo app at `/` in real browsers: sign in through the OAuth login,
// meet in a room and see each other's video, chat (with history after a
// reload), presence and typing, screen sharing, and a 1:1 call. Saves the
// README's screenshots of the app (desktop and phone size).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { sleep, waitFor } from '../lib/server.js';
import { IMAGES, PHONE, webTest } from '../lib/web.js';

test(
  'demo app: sign in, meet in a room, video both ways, presence, typing, chat with history after a reload',
  webTest(async ({ signIn }) => {
    const alice = await signIn('alice');
    const bob = await signIn('bob', { viewport: PHONE });

    // Presence: each sees the other online (the lobby channel's presence).
    await alice.page.locator('#people li', { hasText: 'bob' }).waitFor();
    await bob.page.locator('#people li', { hasText: 'alice' }).waitFor();
    assert.equal(await alice.page.locator('#people-count').textContent(), '(2)');
    await alice.page.getByRole('button', { name: 'Call bob' }).waitFor();

    await alice.joinRoom('standup');
    // alice's join is announced in the lobby: bob gets it under "Recent rooms".
    await bob.page.getByRole('button', { name: 'Join room standup' }).click();
    await bob.page.locator('#room-title', { hasText: 'standup' }).waitFor();

    // Each plays the other's camera.
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);
    await alice.page.locator('#grid figure[aria-label="bob"]').waitFor();

    // Chat both ways.
    await alice.say('Hello from alice');
    await bob.page.locator('#messages li', { hasText: 'Hello from alice' }).waitFor();
    // Typing: alice sees "bob is typing…" while bob types, gone when he sends.
    await bob.message().pressSequentially('Hi al', { delay: 40 });
    await alice.page.locator('#typing', { hasText: 'bob is typing…' }).waitFor();
    await bob.message().pressSequentially('ice!', { delay: 20 });
    await bob.page.getByRole('button', { name: 'Send' }).click();
    await alice.page.locator('#messages li', { hasText: 'Hi alice!' }).waitFor();
    await waitFor('the typing indicator to clear', async () => (await alice.page.locator('#typing').textContent()) === '', {
      timeoutMs: 6000,
    });
    assert.deepEqual(await alice.chat(), ['aliceHello from alice', 'bobHi alice!']);

    // Screenshots for the README (fixed viewports, after the videos play).
    await sleep(1000);
    for (const u of [alice, bob]) {
      await u.page.evaluate(() => {
        document.activeElement?.blur();
        window.scrollTo(0, 0);
      });
    }
    await alice.page.screenshot({ path: join(IMAGES, 'demo-app.png') });
    await bob.page.screenshot({ path: join(IMAGES, 'demo-app-phone.png') });

    // A reload keeps the session (sessionStorage) and the room (#room=…);
    // the chat comes back from history, in order, once.
    await bob.page.reload();
    await bob.page.locator('#room-title', { hasText: 'standup' }).waitFor();
    await bob.page.locator('#messages li', { hasText: 'Hi alice!' }).waitFor();
    assert.deepEqual(await bob.chat(), ['aliceHello from alice', 'bobHi alice!']);
    // …and the room works again after the reload: video and chat.
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);
    await alice.say('welcome back');
    await bob.page.locator('#messages li', { hasText: 'welcome back' }).waitFor();

    // Leaving: bob's tile goes away on alice's side.
    await bob.page.getByRole('button', { name: 'Leave room' }).click();
    await bob.page.locator('#lobby').waitFor();
    await alice.page.locator('#grid figure[aria-label="bob"]').waitFor({ state: 'detached' });
  }),
);

test(
  'a third person joins a two-person room: it moves from peer to peer to the SFU and everyone plays everyone',
  webTest(async ({ signIn }) => {
    const [alice, carol] = await Promise.all([signIn('alice'), signIn('carol')]);
    await alice.joinRoom('trio');
    await carol.joinRoom('trio');
    await alice.expectVideo("carol's camera");
    assert.equal(await alice.page.locator('#room-mode').textContent(), 'peer to peer');

    const bob = await signIn('bob');
    await bob.joinRoom('trio');
    await alice.page.locator('#room-mode', { hasText: 'SFU' }).waitFor();
    // The SFU copies replace the peer-to-peer ones in the same tiles.
    await Promise.all([
      alice.expectVideo("carol's camera"),
      alice.expectVideo("bob's camera"),
      carol.expectVideo("alice's camera"),
      carol.expectVideo("bob's camera"),
      bob.expectVideo("alice's camera"),
      bob.expectVideo("carol's camera"),
    ]);
    for (const u of [alice, bob, carol]) assert.equal(await u.page.locator('#grid figure').count(), 3, `${u.name}: three tiles`);
  }),
);

test(
  "controls: mute and camera off show at the other side; screen share arrives as a screen tile and goes when stopped",
  webTest(async ({ signIn }) => {
    const [alice, bob] = await Promise.all([signIn('alice'), signIn('bob')]);
    await alice.joinRoom('demo');
    await bob.joinRoom('demo');
    await bob.expectVideo("alice's camera");
    const aliceTile = bob.page.locator('#grid figure[aria-label="alice"]');

    // Microphone: bob sees alice muted, then not.
    await alice.page.getByRole('button', { name: 'Mute microphone' }).click();
    await alice.page.getByRole('button', { name: 'Unmute microphone', pressed: true }).waitFor();
    await aliceTile.locator('.muted-icon').waitFor({ state: 'visible' });
    await alice.page.getByRole('button', { name: 'Unmute microphone' }).click();
    await aliceTile.locator('.muted-icon').waitFor({ state: 'hidden' });

    // Camera: bob gets the initial instead of the picture, then the picture again.
    await alice.page.getByRole('button', { name: 'Turn camera off' }).click();
    await aliceTile.locator('.placeholder').waitFor({ state: 'visible' });
    assert.equal(await aliceTile.locator('.placeholder').textContent(), 'A');
    await aliceTile.locator('video').waitFor({ state: 'hidden' });
    await alice.page.getByRole('button', { name: 'Turn camera on' }).click();
    await aliceTile.locator('.placeholder').waitFor({ state: 'hidden' });
    await bob.expectVideo("alice's camera");

    await alice.page.getByRole('button', { name: 'Share screen' }).click();
    await alice.page.getByRole('button', { name: 'Stop sharing' }).waitFor();
    await alice.page.locator('#grid figure[aria-label="alice (you): screen"] video').waitFor();

    await bob.page.locator('#grid figure[aria-label="alice: screen"]').waitFor();
    const screen = await bob.expectVideo("alice's screen");
    const camera = (await bob.remoteVideos())["alice's camera"];
    assert.ok(camera && camera.frames > 0, 'the camera keeps playing next to the screen');
    assert.ok(screen.width > 0 && screen.height > 0, `screen video has a size: ${JSON.stringify(screen)}`);

    await alice.page.getByRole('button', { name: 'Stop sharing' }).click();
    await bob.page.locator('#grid figure[aria-label="alice: screen"]').waitFor({ state: 'detached' });
    await alice.page.getByRole('button', { name: 'Share screen' }).waitFor();
  }),
);

test(
  '1:1 call: alice rings bob, bob answers, both play each other',
  webTest(async ({ signIn }) => {
    const [alice, bob] = await Promise.all([signIn('alice'), signIn('bob')]);
    await alice.page.getByRole('button', { name: 'Call bob' }).click();
    await alice.page.locator('#toast', { hasText: 'Calling bob…' }).waitFor();

    const ring = bob.page.getByRole('dialog', { name: 'Incoming call' });
    await ring.waitFor();
    assert.equal(await ring.locator('#ring-text').textContent(), 'alice is calling you.');
    await ring.getByRole('button', { name: 'Accept' }).click();

    await alice.page.getByRole('heading', { name: 'Call with bob' }).waitFor();
    await bob.page.getByRole('heading', { name: 'Call with alice' }).waitFor();
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);
    // Two people: peer to peer.
    assert.equal(await alice.page.locator('#room-mode').textContent(), 'peer to peer');

    // Hanging up: bob leaves, alice's tile for him goes.
    await bob.page.getByRole('button', { name: 'Leave room' }).click();
    await bob.page.locator('#lobby').waitFor();
    await alice.page.locator('#grid figure[aria-label="bob"]').waitFor({ state: 'detached' });
  }),
);
