"""Recovery after disconnect, server-side subscriptions, permission errors."""

import asyncio

import pytest
from centrifuge import ReplyError

from helpers import chan, dec, enc


async def test_recovery_after_disconnect(server, clients, mode):
    client, cev = await clients.connect(server)
    ch = chan("durable")
    sub, sev = await clients.subscribe(client, ch)
    await server.publish(ch, {"n": 0})
    await sev.wait("publication")
    await client.disconnect()
    for n in range(1, 6):
        await server.publish(ch, {"n": n})
    mark = sev.mark()
    await client.connect()
    ctx = await sev.wait("subscribed", start=mark, timeout=8)
    assert ctx.was_recovering is True, f"{ctx}"
    assert ctx.recovered is True, f"{ctx}"
    pubs = await sev.collect("publication", 5, start=mark, timeout=8)
    assert [dec(mode, p.pub.data)["n"] for p in pubs] == [1, 2, 3, 4, 5]
    assert [p.pub.offset for p in pubs] == [2, 3, 4, 5, 6]


async def test_recovery_after_server_restart(server, clients, mode):
    client, _ = await clients.connect(server)
    ch = chan("persist")
    sub, sev = await clients.subscribe(client, ch)
    r0 = await server.publish(ch, {"n": 0})
    await sev.wait("publication")
    await client.disconnect()
    code = await server.astop()
    assert code == 0, f"graceful SIGTERM exit code 0, got {code}"
    await server.astart()
    res = [await server.publish(ch, {"n": n}) for n in (1, 2, 3)]
    assert [r["offset"] for r in res] == [2, 3, 4]
    assert all(r["epoch"] == r0["epoch"] for r in res)
    mark = sev.mark()
    await client.connect()
    ctx = await sev.wait("subscribed", start=mark, timeout=8)
    assert (ctx.was_recovering, ctx.recovered) == (True, True), f"{ctx}"
    pubs = await sev.collect("publication", 3, start=mark, timeout=8)
    assert [dec(mode, p.pub.data)["n"] for p in pubs] == [1, 2, 3]


async def test_server_side_subscription_from_token(server, clients, mode):
    ch = chan("personal")
    client, cev = await clients.connect(server, token=server.token("alice", channels=[ch]))
    s = await cev.wait("subscribed", lambda c: c.channel == ch)
    assert s.channel == ch
    await server.publish(ch, {"to": "alice"})
    p = await cev.wait("publication", lambda c: c.channel == ch)
    assert dec(mode, p.pub.data) == {"to": "alice"}
    assert p.pub.offset == 1


async def test_api_disconnect(server, clients, mode):
    client, cev = await clients.connect(server)
    await server.api("disconnect", {"user": "alice"})
    d = await cev.wait("disconnected")
    assert 3500 <= d.code < 5000, f"{d}"


async def test_permission_errors(rules_server, clients, mode):
    server = rules_server
    client, _ = await clients.connect(server)
    ch = chan("secret:")
    sub, sev = clients.sub(client, ch)
    await sub.subscribe()
    u = await sev.wait("unsubscribed")
    assert u.code == 103, f"{u}"
    client.remove_subscription(sub)

    token = server.cli_token("--user", "alice", "--channel", ch)
    sub, sev = await clients.subscribe(client, ch, token=token)
    await server.publish(ch, {"ok": 1})
    assert dec(mode, (await sev.wait("publication")).pub.data) == {"ok": 1}

    with pytest.raises(ReplyError) as ei:
        await client.publish(chan("readonly:"), enc(mode, {}))
    assert ei.value.code == 103

    dialog = f"dialog:{chan('talk')}#bob,carol"
    dsub, dev = clients.sub(client, dialog)
    await dsub.subscribe()
    assert (await dev.wait("unsubscribed")).code == 103


async def test_subscription_refresh_via_get_token(rules_server, clients, mode):
    server = rules_server
    client, cev = await clients.connect(server)
    ch = chan("secret:")
    calls = 0

    async def get_token(channel: str) -> str:
        nonlocal calls
        calls += 1
        assert channel == ch
        return server.sub_token("alice", channel, ttl=60)

    sub, sev = await clients.subscribe(client, ch, token=server.sub_token("alice", ch, ttl=3), get_token=get_token)
    await asyncio.sleep(6)
    assert calls >= 1
    assert sev.all("unsubscribed") == [] and len(sev.all("subscribed")) == 1, sev.describe()
    assert len(cev.all("connected")) == 1, cev.describe()
    await server.publish(ch, {"still": True})
    assert dec(mode, (await sev.wait("publication")).pub.data) == {"still": True}
