// The demo app when things go wrong: the server restarts under a signed-in
// user (the SDK reconnects, the room comes back, chat missed meanwhile is
// shown without a reload), and WebSocket is blocked (centrifuge-js falls
// back to HTTP-streaming, then SSE, with commands posted to /emulation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../lib/server.js';
import { webTest } from '../lib/web.js';

// Routes the context's WebSockets to the server, or refuses them (closed
// before they open, as a proxy that drops the upgrade) while `gate.blocked`.
async function wsGate(context) {
  const gate = { blocked: false, refused: 0 };
  await context.routeWebSocket(/\/connection\/websocket/, (ws) => {
    if (gate.blocked) {
      gate.refused += 1;
      ws.close();
      return;
    }
    ws.connectToServer();
  });
  return gate;
}

test(
  'server restart: the app reconnects by itself, rejoins the room and shows chat published while it was away',
  webTest(async ({ server, signIn }) => {
    let gate = null;
    const alice = await signIn('alice', { setup: async (ctx) => (gate = await wsGate(ctx)) });
    const bob = await signIn('bob');
    await alice.joinRoom('ops');
    await bob.joinRoom('ops');
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);
    await bob.say('before the restart');
    await alice.page.locator('#messages li', { hasText: 'before the restart' }).waitFor();

    // Stop the server (same port and data dir kept) and keep alice's
    // network to it down until the messages below are published.
    gate.blocked = true;
    await server.kill();
    await alice.page.locator('#conn-status', { hasText: /^(disconnected|connecting)/ }).waitFor();
    await server.spawn();

    // Published while alice is away: through the server API and by bob
    // (who reconnects on his own).
    await server.api('publish', { channel: 'chat:ops', data: { text: 'from the API during the outage' } });
    await bob.connected(30000);
    await bob.page.locator('#room-title', { hasText: 'ops' }).waitFor();
    await bob.say('bob after the restart');
    assert.equal(await alice.page.locator('#messages li', { hasText: 'after the restart' }).count(), 0);
    assert.ok(gate.refused > 0, 'alice tried to reconnect while blocked');

    // alice's network is back: she reconnects without a reload and sees
    // both missed messages after the old one, once each.
    gate.blocked = false;
    await alice.connected(30000);
    await alice.page.locator('#messages li', { hasText: 'bob after the restart' }).waitFor();
    await waitFor(
      "alice's chat to hold the missed messages in order",
      async () => {
        // (The API's publication has no sender: "someone".)
        const chat = await alice.chat();
        return (
          JSON.stringify(chat.filter((m) => /restart|outage/.test(m))) ===
          JSON.stringify(['bobbefore the restart', 'someonefrom the API during the outage', 'bobbob after the restart'])
        );
      },
      { timeoutMs: 10000, describe: () => alice.chat() },
    );
    // Still in the room, and media flows again both ways (rejoined).
    assert.equal(await alice.page.locator('#room-title').textContent(), 'ops');
    await Promise.all([alice.expectVideo("bob's camera"), bob.expectVideo("alice's camera")]);
    // And chat goes on live.
    await alice.say('alice is back');
    await bob.page.locator('#messages li', { hasText: 'alice is back' }).waitFor();
  }),
);

test(
  'WebSocket blocked: the app falls back to HTTP-streaming (and to SSE when that is blocked too) and still chats, sees presence and video',
  webTest(async ({ signIn }) => {
    // alice: no WebSocket. carol: no WebSocket and no HTTP-streaming.
    const transports = { alice: new Set(), carol: new Set() };
    const watch = (name, extra) => async (ctx) => {
      const gate = await wsGate(ctx);
      gate.blocked = true;
      if (extra) await ctx.route(/\/connection\/http_stream/, (route) => route.abort('connectionrefused'));
      ctx.on('request', (r) => {
        const m = new URL(r.url()).pathname.match(/^\/(connection\/\w+|emulation)$/);
        if (m && r.failure() === null) transports[name].add(m[1]);
      });
      ctx.on('requestfinished', (r) => {
        const m = new URL(r.url()).pathname.match(/^\/(connection\/\w+|emulation)$/);
        if (m) transports[name].add(`${m[1]} ok`);
      });
    };
    const alice = await signIn('alice', { setup: watch('alice', false) });
    const carol = await signIn('carol', { setup: watch('carol', true) });
    const bob = await signIn('bob');

    // Used what they were left with; commands went through /emulation.
    assert.ok(transports.alice.has('connection/http_stream'), `alice: ${[...transports.alice]}`);
    assert.ok(!transports.alice.has('connection/sse'), `alice: ${[...transports.alice]}`);
    assert.ok(transports.carol.has('connection/sse'), `carol: ${[...transports.carol]}`);
    for (const name of ['alice', 'carol']) assert.ok(transports[name].has('emulation ok'), `${name}: ${[...transports[name]]}`);

    // Presence both ways.
    await alice.page.locator('#people li', { hasText: 'carol' }).waitFor();
    await carol.page.locator('#people li', { hasText: 'bob' }).waitFor();
    await bob.page.locator('#people li', { hasText: 'alice' }).waitFor();

    await alice.joinRoom('fallback');
    await carol.joinRoom('fallback');
    await bob.joinRoom('fallback');
    await alice.say('alice over http-streaming');
    await carol.say('carol over sse');
    await bob.say('bob over websocket');
    for (const u of [alice, bob, carol]) {
      await waitFor(
        `${u.name} to show the three messages`,
        async () => (await u.chat()).filter((m) => / over /.test(m)).length === 3,
        { timeoutMs: 10000, describe: () => u.chat() },
      );
    }
    // Room signaling works over the emulated transports too.
    await Promise.all([alice.expectVideo("bob's camera"), alice.expectVideo("carol's camera"), carol.expectVideo("alice's camera")]);
  }),
);
