"""Connection with centrifuge-python: tokens, connect options, refresh, RPC."""

import asyncio
import time

import jwt
import pytest
from centrifuge import ReplyError

from helpers import dec, enc


async def test_connect_with_cli_token(server, clients, mode):
    token = server.cli_token("--user", "alice", "--info", '{"name":"Alice"}', as_json=False)
    claims = jwt.decode(token, server.secret, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    client, ev = await clients.connect(
        server, token=token, name="switchboard-py-tests", version="0.0.1", data=enc(mode, {"hi": 1})
    )
    ctx = ev.all("connected")[0]
    assert isinstance(ctx.client, str) and ctx.client, f"client id in connect reply: {ctx}"
    other, ev2 = await clients.connect(server, user="alice")
    assert ev2.all("connected")[0].client != ctx.client


async def test_rpc_echo_and_unknown_method(server, clients, mode):
    client, _ = await clients.connect(server)
    payload = {"text": "héllo ✓", "n": 7, "list": [1, None, {"x": True}]}
    res = await client.rpc("echo", enc(mode, payload))
    assert dec(mode, res.data) == payload
    if mode == "protobuf":
        raw = bytes([0, 1, 2, 254, 255, 0])
        assert bytes((await client.rpc("echo", raw)).data) == raw
    with pytest.raises(ReplyError) as ei:
        await client.rpc("no.such.method", enc(mode, {}))
    assert ei.value.code == 104
    # The connection survives the error.
    assert dec(mode, (await client.rpc("echo", enc(mode, "ok"))).data) == "ok"


async def test_connection_refresh_via_get_token(server, clients, mode):
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return server.token("alice", ttl=60)

    client, ev = await clients.connect(server, token=server.token("alice", ttl=3), get_token=get_token)
    await asyncio.sleep(6)
    assert calls >= 1, "get_token called to refresh the connection"
    assert client.state.value == "connected"
    assert len(ev.all("connected")) == 1, f"no reconnect after the token expired: {ev.describe()}"
    assert ev.all("disconnected") == []
    assert dec(mode, (await client.rpc("echo", enc(mode, 1))).data) == 1


async def test_expired_token_with_get_token(server, clients, mode):
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return server.token("alice")

    client, ev = clients.new(server, token=server.token("alice", exp=int(time.time()) - 60), get_token=get_token)
    await client.connect()
    await ev.wait("connected", timeout=8)
    assert calls >= 1


async def test_expired_token_without_get_token_is_unauthorized(server, clients, mode):
    client, ev = clients.new(server, token=server.token("alice", exp=int(time.time()) - 60))
    await client.connect()
    d = await ev.wait("disconnected", timeout=8)
    assert d.code == 1, f"SDK unauthorized disconnect expected, got {d}; events: {ev.describe()}"


async def test_invalid_token_disconnects_3500(server, clients, mode):
    bad = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, "wrong", algorithm="HS256")
    client, ev = clients.new(server, token=bad)
    await client.connect()
    d = await ev.wait("disconnected", timeout=5)
    assert d.code == 3500, f"{d}"
