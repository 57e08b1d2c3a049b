// An `auto` room in real browsers: two participants talk peer to peer (the
// SFU carries nothing for them), a third joins and the room moves to the
// SFU, where all three decode each other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectMediaFrom } from '../lib/browser.js';
import { callTest, expectPush } from '../lib/call.js';
import { createRoom } from '../lib/rooms.js';
import { waitFor } from '../lib/server.js';

test(
  'auto room: 1:1 is peer to peer, a third participant moves everyone to the SFU',
  callTest({}, async ({ server, open }) => {
    const room = 'browser-auto';
    await createRoom(server, room, 'auto');
    const [alice, bob] = await Promise.all([open('alice'), open('bob')]);

    assert.equal((await alice.join(server, room)).mode, 'p2p');
    assert.equal((await bob.join(server, room)).mode, 'p2p');
    assert.deepEqual(await bob.sb(() => window.sb.joinResult.participants), [alice.id]);
    assert.equal(await bob.sb(() => window.sb.joinResult.offer), undefined, 'a p2p join has no SFU offer');

    await Promise.all([expectMediaFrom(alice, [bob], 'p2p'), expectMediaFrom(bob, [alice], 'p2p')]);

    // Peer to peer for real: each page has one connection, to the other
    // browser, and its selected pair does not touch the SFU's UDP port.
    const sfuPort = server.mediaPort();
    for (const [p, other] of [[alice, bob], [bob, alice]]) {
      assert.deepEqual(await p.sb(() => window.sb.connectionNames()), [`p2p:${other.id}`]);
      const pairs = await p.selectedPairs();
      assert.equal(pairs.length, 1, JSON.stringify(pairs));
      assert.notEqual(pairs[0].remote.port, sfuPort, `${p.name}'s P2P pair goes to the SFU: ${JSON.stringify(pairs)}`);
      assert.notEqual(pairs[0].local.port, sfuPort, JSON.stringify(pairs));
    }
    // And the server's room has both participants but no SFU tracks.
    const before = (await server.api('room_get', { room })).result.room;
    assert.deepEqual(before.participants.map((p) => p.participant).sort(), [alice.id, bob.id].sort());
    for (const p of before.participants) assert.deepEqual(p.tracks, [], `SFU tracks in a P2P call: ${JSON.stringify(before)}`);

    const carol = await open('carol');
    assert.equal((await carol.join(server, room)).mode, 'sfu');
    for (const p of [alice, bob]) {
      const push = await expectPush(p, 'rtc.mode', (e) => e.mode === 'sfu');
      assert.equal(typeof push.offer, 'string', 'rtc.mode carries the subscriber offer');
      await expectPush(p, 'rtc.participant_joined', (e) => e.participant === carol.id && e.user === 'carol');
    }
    await Promise.all([
      expectMediaFrom(alice, [bob, carol], 'sfu'),
      expectMediaFrom(bob, [alice, carol], 'sfu'),
      expectMediaFrom(carol, [alice, bob], 'sfu'),
    ]);
    // The peer-to-peer connections are closed once the SFU peers are up.
    for (const p of [alice, bob]) {
      await waitFor(`${p.name} to close its P2P connection`, async () => {
        const names = await p.sb(() => window.sb.connectionNames());
        return names.every((n) => !n.startsWith('p2p:'));
      }, { timeoutMs: 10000, describe: () => p.sb(() => window.sb.connectionNames()) });
    }
    const after = (await server.api('room_get', { room })).result.room;
    assert.equal(after.participants.length, 3, JSON.stringify(after));
    for (const p of after.participants) {
      assert.equal(p.tracks.length, 2, `each participant publishes audio and video to the SFU: ${JSON.stringify(after)}`);
    }
  }),
);
