"""Subscribe, publish/receive, presence, join/leave, history."""

import asyncio

from helpers import chan, dec, enc


async def test_subscribe_publish_receive(server, clients, mode):
    alice, aev = await clients.connect(server, user="alice", token=server.token("alice", info={"name": "Alice"}))
    bob, _ = await clients.connect(server, user="bob")
    ch = chan("chat")
    sub, sev = await clients.subscribe(bob, ch)
    sctx = sev.all("subscribed")[0]
    assert sctx.channel == ch
    assert sctx.recoverable is True, f"subscribe reply: {sctx}"
    assert sctx.positioned is True
    assert sctx.stream_position is not None and sctx.stream_position.epoch

    payloads = [{"text": "hi", "n": 1, "nested": {"a": [1, 2]}}, "plain", 3.5]
    for p in payloads:
        await alice.publish(ch, enc(mode, p))
    pubs = await sev.collect("publication", len(payloads), timeout=5)
    assert [dec(mode, p.pub.data) for p in pubs] == payloads
    assert [p.pub.offset for p in pubs] == [1, 2, 3]
    info = pubs[0].pub.info
    assert info is not None and info.user == "alice"
    assert info.client == aev.all("connected")[0].client
    assert dec(mode, info.conn_info) == {"name": "Alice"}

    # API publish too.
    res = await server.publish(ch, {"via": "api"})
    assert res["offset"] == 4
    p = await sev.wait("publication", lambda c: c.pub.offset == 4)
    assert dec(mode, p.pub.data) == {"via": "api"}

    # Unsubscribe stops delivery.
    await sub.unsubscribe()
    await sev.wait("unsubscribed")
    await bob.rpc("echo", enc(mode, 0))  # barrier
    mark = sev.mark()
    await server.publish(ch, {"late": True})
    await asyncio.sleep(0.4)
    assert sev.mark() == mark, f"no event after unsubscribe: {sev.describe()}"


async def test_presence_and_stats(server, clients, mode):
    alice, aev = await clients.connect(server, token=server.token("alice", info={"name": "Alice"}))
    bob, bev = await clients.connect(server, user="bob")
    bob2, bev2 = await clients.connect(server, user="bob")
    ch = chan("lobby")
    sub, _ = await clients.subscribe(alice, ch)
    await clients.subscribe(bob, ch)
    await clients.subscribe(bob2, ch)
    pr = await sub.presence()
    ids = sorted(e.all("connected")[0].client for e in (aev, bev, bev2))
    assert sorted(pr.clients.keys()) == ids
    me = pr.clients[aev.all("connected")[0].client]
    assert me.user == "alice"
    assert dec(mode, me.conn_info) == {"name": "Alice"}
    st = await sub.presence_stats()
    assert (st.num_clients, st.num_users) == (3, 2)
    st2 = await bob.presence_stats(ch)
    assert st2.num_clients == 3


async def test_join_leave(server, clients, mode):
    alice, _ = await clients.connect(server, user="alice")
    bob, bev = await clients.connect(server, user="bob")
    ch = chan("party")
    _, aev = await clients.subscribe(alice, ch, join_leave=True)
    bsub, _ = await clients.subscribe(bob, ch, join_leave=True)
    j = await aev.wait("join", lambda c: c.info.user == "bob")
    assert j.info.client == bev.all("connected")[0].client
    await bsub.unsubscribe()
    lv = await aev.wait("leave", lambda c: c.info.user == "bob")
    assert lv.info.client == bev.all("connected")[0].client


async def test_history_limit_since_reverse(server, clients, mode):
    client, _ = await clients.connect(server)
    ch = chan("log")
    results = [await server.publish(ch, {"i": i}) for i in range(1, 11)]
    assert [r["offset"] for r in results] == list(range(1, 11))
    epoch = results[0]["epoch"]
    sub, sev = await clients.subscribe(client, ch)
    sp = sev.all("subscribed")[0].stream_position
    assert (sp.offset, sp.epoch) == (10, epoch)

    def items(h):
        return [(p.offset, dec(mode, p.data)["i"]) for p in h.publications]

    h = await sub.history(limit=3)
    assert items(h) == [(1, 1), (2, 2), (3, 3)]
    assert (h.offset, h.epoch) == (10, epoch)
    h = await sub.history(limit=3, reverse=True)
    assert items(h) == [(10, 10), (9, 9), (8, 8)]
    from centrifuge import StreamPosition

    h = await sub.history(limit=10, since=StreamPosition(offset=5, epoch=epoch))
    assert items(h) == [(i, i) for i in range(6, 11)]
    h = await client.history(ch, limit=2, since=StreamPosition(offset=5, epoch=epoch))
    assert items(h) == [(6, 6), (7, 7)]
    h = await sub.history()
    assert h.publications == [] and h.offset == 10
