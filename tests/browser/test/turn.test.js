// A call forced through a real coturn: the browsers may only use relay
// candidates (iceTransportPolicy 'relay') with the TURN REST credentials
// rtc.join hands out; media must flow over a relay candidate pair.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectMediaFrom } from '../lib/browser.js';
import { callTest } from '../lib/call.js';
import { startCoturn } from '../lib/coturn.js';
import { createRoom } from '../lib/rooms.js';

test('relayed call through coturn (iceTransportPolicy relay) delivers audio and video', async (t) => {
  const turn = await startCoturn();
  const config = `
[media.turn]
urls = ["${turn.url}"]
secret = "${turn.secret}"
ttl = "10m"
`;
  try {
    await callTest({ config }, async ({ server, open }) => {
      const room = 'browser-turn';
      await createRoom(server, room, 'sfu');
      const [alice, bob] = await Promise.all([open('alice'), open('bob')]);
      await alice.join(server, room, { relay: true });
      await bob.join(server, room, { relay: true });

      // rtc.join handed out time-limited credentials for the configured server.
      const ice = await alice.sb(() => window.sb.joinResult.ice_servers);
      const entry = ice.find((s) => s.urls.includes(turn.url));
      assert.ok(entry, `no ICE server for ${turn.url} in ${JSON.stringify(ice)}`);
      const [expiry, user] = entry.username.split(':');
      assert.equal(user, 'alice');
      assert.ok(Number(expiry) > Date.now() / 1000, `expired TURN username ${entry.username}`);

      await Promise.all([expectMediaFrom(alice, [bob], 'sfu'), expectMediaFrom(bob, [alice], 'sfu')]);

      // Every peer connection runs over a relay candidate allocated on coturn.
      for (const p of [alice, bob]) {
        const pairs = await p.selectedPairs();
        assert.deepEqual(pairs.map((x) => x.pc).sort(), ['pub', 'sub'], `${p.name}: ${JSON.stringify(pairs)}`);
        for (const pair of pairs) {
          assert.equal(pair.local.type, 'relay', `${p.name} ${pair.pc} is not relayed: ${JSON.stringify(pair)}`);
          assert.equal(pair.local.relayProtocol, 'udp', JSON.stringify(pair));
          assert.equal(pair.local.address, '127.0.0.1', JSON.stringify(pair));
          assert.equal(pair.state, 'succeeded', JSON.stringify(pair));
        }
      }
    })(t);
  } catch (e) {
    e.message = `${e.message}\n--- coturn log (tail) ---\n${(await turn.log()).slice(-3000)}`;
    throw e;
  } finally {
    await turn.stop();
  }
});
