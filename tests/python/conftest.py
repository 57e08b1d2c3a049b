"""Fixtures: a fresh switchboard per test (dev rules or the namespaces
config), and a centrifuge-python client factory for JSON or protobuf."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from centrifuge import Client

from helpers import RULES_TOML, ClientEvents, Server, SubEvents


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _server(request, **kw) -> Server:
    srv = Server(**kw)
    try:
        srv.start()
    except BaseException:
        srv.cleanup()
        raise
    return srv


def _finish(request, srv: Server) -> None:
    srv.cleanup()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- switchboard log (tail) for {request.node.name} ---\n{srv.logs()}")


@pytest.fixture
def server(request):
    srv = _server(request)
    yield srv
    _finish(request, srv)


@pytest.fixture
def rules_server(request):
    srv = _server(request, config=RULES_TOML, dev=False)
    yield srv
    _finish(request, srv)


@pytest.fixture(params=["json", "protobuf"])
def mode(request) -> str:
    return request.param


class Clients:
    """Builds SDK clients the way an app does; all are disconnected at teardown."""

    def __init__(self, mode: str):
        self.mode = mode
        self.made: List[Client] = []

    def new(self, server: Server, **kw: Any) -> Tuple[Client, ClientEvents]:
        events = ClientEvents()
        opts = dict(
            events=events,
            use_protobuf=self.mode == "protobuf",
            min_reconnect_delay=0.1,
            max_reconnect_delay=1.0,
            timeout=5.0,
            proxy=None,
        )
        opts.update(kw)
        client = Client(server.ws_url, **opts)
        self.made.append(client)
        return client, events

    async def connect(self, server: Server, user: str = "alice", **kw: Any) -> Tuple[Client, ClientEvents]:
        if "token" not in kw and "get_token" not in kw:
            kw["token"] = server.token(user)
        client, events = self.new(server, **kw)
        await client.connect()
        await events.wait("connected", timeout=5)
        return client, events

    @staticmethod
    def sub(client: Client, channel: str, **kw: Any):
        events = SubEvents()
        sub = client.new_subscription(channel, events=events, **kw)
        return sub, events

    async def subscribe(self, client: Client, channel: str, **kw: Any):
        sub, events = self.sub(client, channel, **kw)
        await sub.subscribe()
        await events.wait("subscribed", timeout=5)
        return sub, events

    async def close(self) -> None:
        for c in self.made:
            try:
                await c.disconnect()
            except Exception:  # noqa: BLE001 - teardown best effort
                pass


@pytest.fixture
async def clients(mode):
    c = Clients(mode)
    yield c
    await c.close()
