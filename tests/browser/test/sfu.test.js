// An SFU room in real browsers: two participants decode each other's video
// and audio, a third joins and is seen by the others, one leaves and the
// others are told.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectMediaFrom } from '../lib/browser.js';
import { callTest, expectPush } from '../lib/call.js';
import { createRoom } from '../lib/rooms.js';
import { waitFor } from '../lib/server.js';

test(
  'SFU room: two browsers exchange audio and video, a third joins, one leaves',
  callTest({}, async ({ server, open }) => {
    const room = 'browser-sfu';
    await createRoom(server, room, 'sfu');
    const [alice, bob] = await Promise.all([open('alice'), open('bob')]);

    assert.equal((await alice.join(server, room)).mode, 'sfu');
    assert.equal((await bob.join(server, room)).mode, 'sfu');
    await expectPush(alice, 'rtc.participant_joined', (e) => e.participant === bob.id && e.user === 'bob');
    await Promise.all([expectMediaFrom(alice, [bob], 'sfu'), expectMediaFrom(bob, [alice], 'sfu')]);

    const carol = await open('carol');
    assert.equal((await carol.join(server, room)).mode, 'sfu');
    for (const p of [alice, bob]) {
      await expectPush(p, 'rtc.participant_joined', (e) => e.participant === carol.id && e.user === 'carol');
    }
    await Promise.all([
      expectMediaFrom(alice, [bob, carol], 'sfu'),
      expectMediaFrom(bob, [alice, carol], 'sfu'),
      expectMediaFrom(carol, [alice, bob], 'sfu'),
    ]);
    // The SFU offered the subscriber data channel to everyone.
    for (const p of [alice, bob, carol]) {
      assert.ok((await p.sb(() => window.sb.dataChannels.length)) >= 1, `${p.name} got no data channel`);
    }

    await bob.leave();
    for (const p of [alice, carol]) {
      await expectPush(p, 'rtc.participant_left', (e) => e.participant === bob.id && e.reason === 'left');
      const others = [alice, carol].filter((x) => x !== p).map((x) => x.id);
      await waitFor(`${p.name}'s participant list to drop bob`, async () => {
        const list = await p.sb(() => window.sb.participants);
        return JSON.stringify(list) === JSON.stringify(others);
      }, { timeoutMs: 5000, describe: () => p.sb(() => window.sb.participants) });
    }
    // The two who stay keep receiving each other.
    await Promise.all([expectMediaFrom(alice, [carol], 'sfu'), expectMediaFrom(carol, [alice], 'sfu')]);
  }),
);
