"""Switchboard test harness for centrifuge-python: spawn the binary, mint
tokens, call the server API, record SDK events with bounded waits."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import aiohttp
import jwt
from centrifuge import ClientEventHandler, SubscriptionEventHandler

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SWITCHBOARD_BIN") or str(REPO / "target" / "debug" / "switchboard")

RULES_TOML = """
[token]
hmac_secret = "test-secret"

[api]
keys = ["test-key"]

[channel.defaults]
presence = true
join_leave = true
force_push_join_leave = true
history_size = 100
history_ttl = "1h"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_client = true
allow_history_for_client = true

[channel.namespaces.secret]
allow_subscribe_for_client = false

[channel.namespaces.dialog]
allow_user_limited_channels = true
allow_subscribe_for_client = true

[channel.namespaces.readonly]
allow_publish_for_client = false
allow_subscribe_for_client = true
"""


def server_env() -> dict:
    """Environment for the server and CLI: the harness's own SWITCHBOARD_BIN
    is not a config override (the server refuses unknown SWITCHBOARD_* keys)."""
    env = dict(os.environ)
    env.pop("SWITCHBOARD_BIN", None)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One switchboard process on a free port with a fresh temp data dir."""

    def __init__(self, config: Optional[str] = None, dev: bool = True):
        self.config = config
        self.dev = dev
        self.secret = "test-secret" if config else "dev-token-secret"
        self.api_key = "test-key" if config else "dev-api-key"
        self.tmp = tempfile.mkdtemp(prefix="sb-py-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.config_path: Optional[str] = None
        if config:
            self.config_path = os.path.join(self.tmp, "switchboard.toml")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_lines: List[str] = []
        self._reader: Optional[threading.Thread] = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings_args(self) -> List[str]:
        args = []
        if self.dev:
            args.append("--dev")
        if self.config_path:
            args += ["--config", self.config_path]
        return args

    def logs(self, tail: int = 6000) -> str:
        return "".join(self.log_lines)[-tail:]

    def start(self) -> "Server":
        args = [BIN, "serve", "--http-addr", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir]
        args += self.settings_args()
        env = server_env()
        env.setdefault("RUST_LOG", "info")
        try:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
            )
        except FileNotFoundError as e:
            raise AssertionError(f"switchboard binary not found: {BIN} ({e})") from e
        proc = self.proc

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.log_lines.append(line)
                if len(self.log_lines) > 5000:
                    del self.log_lines[:1000]

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"switchboard exited early with {self.proc.returncode}\n--- log ---\n{self.logs()}"
                )
            try:
                with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
                    last = f"status {r.status}"
            except Exception as e:  # noqa: BLE001 - any failure means not ready yet
                last = str(e)
            time.sleep(0.05)
        raise AssertionError(f"switchboard not healthy in {timeout}s ({last})\n--- log ---\n{self.logs()}")

    def stop(self) -> Optional[int]:
        """SIGTERM and wait for a graceful exit (SIGKILL after 10 s)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.log_lines.append("[harness] no exit 10 s after SIGTERM: SIGKILL\n")
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._reader:
            self._reader.join(timeout=2)
        return self.proc.returncode

    async def astop(self) -> Optional[int]:
        return await asyncio.to_thread(self.stop)

    async def astart(self) -> "Server":
        return await asyncio.to_thread(self.start)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- server API -----------------------------------------------------
    async def api(self, method: str, body: dict) -> dict:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async with s.post(
                f"{self.http_url}/api/{method}",
                json=body,
                headers={"X-API-Key": self.api_key},
            ) as r:
                text = await r.text()
                assert r.status == 200, f"POST /api/{method} -> {r.status}: {text}"
                data = json.loads(text)
                assert not data.get("error"), f"POST /api/{method} -> {data['error']}"
                return data

    async def publish(self, channel: str, data: Any) -> dict:
        return (await self.api("publish", {"channel": channel, "data": data}))["result"]

    # --- tokens ---------------------------------------------------------
    def token(self, user: str, ttl: int = 3600, exp: Optional[int] = None, **claims: Any) -> str:
        payload = {"sub": user, "exp": exp if exp is not None else int(time.time()) + ttl}
        payload.update(claims)
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def sub_token(self, user: str, channel: str, ttl: int = 3600) -> str:
        payload = {"sub": user, "channel": channel, "exp": int(time.time()) + ttl}
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def cli_token(self, *args: str, as_json: bool = True) -> str:
        cmd = [BIN, "token", "create", *args, *self.settings_args()]
        if as_json:
            cmd.append("--json")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, env=server_env())
        assert out.returncode == 0, f"{cmd} failed: {out.stderr}"
        if as_json:
            return json.loads(out.stdout)["token"]
        return out.stdout.strip().splitlines()[-1].strip()


# --- payloads --------------------------------------------------------------


def enc(mode: str, value: Any) -> Any:
    """Payload as the SDK takes it: JSON value, or JSON bytes in protobuf mode."""
    if mode == "protobuf":
        return json.dumps(value).encode()
    return value


def dec(mode: str, data: Any) -> Any:
    if mode == "protobuf":
        if data is None or data == b"":
            return None
        return json.loads(bytes(data).decode())
    return data


# --- event recording -------------------------------------------------------


class Recorder:
    """Keeps every event in order; waits are bounded and report what arrived."""

    def __init__(self) -> None:
        self.log: List[Tuple[str, Any]] = []
        self._changed = asyncio.Event()

    def _add(self, name: str, ctx: Any) -> None:
        self.log.append((name, ctx))
        self._changed.set()

    def all(self, name: str) -> List[Any]:
        return [c for n, c in self.log if n == name]

    def mark(self) -> int:
        return len(self.log)

    def describe(self) -> str:
        return ", ".join(f"{n}:{c}" for n, c in self.log[-15:])

    async def wait(
        self,
        name: str,
        pred: Callable[[Any], bool] = lambda c: True,
        timeout: float = 5.0,
        start: int = 0,
    ) -> Any:
        return (await self.collect(name, 1, pred=pred, timeout=timeout, start=start))[0]

    async def collect(
        self,
        name: str,
        n: int,
        pred: Callable[[Any], bool] = lambda c: True,
        timeout: float = 5.0,
        start: int = 0,
    ) -> List[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = [c for nm, c in self.log[start:] if nm == name and pred(c)]
            if len(got) >= n:
                return got[:n]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timeout ({timeout}s): {len(got)} of {n} '{name}' events; recent: {self.describe()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


class ClientEvents(Recorder, ClientEventHandler):
    async def on_connecting(self, ctx):
        self._add("connecting", ctx)

    async def on_connected(self, ctx):
        self._add("connected", ctx)

    async def on_disconnected(self, ctx):
        self._add("disconnected", ctx)

    async def on_error(self, ctx):
        self._add("error", ctx)

    async def on_subscribed(self, ctx):
        self._add("subscribed", ctx)

    async def on_subscribing(self, ctx):
        self._add("subscribing", ctx)

    async def on_unsubscribed(self, ctx):
        self._add("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self._add("publication", ctx)

    async def on_join(self, ctx):
        self._add("join", ctx)

    async def on_leave(self, ctx):
        self._add("leave", ctx)


class SubEvents(Recorder, SubscriptionEventHandler):
    async def on_subscribing(self, ctx):
        self._add("subscribing", ctx)

    async def on_subscribed(self, ctx):
        self._add("subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self._add("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self._add("publication", ctx)

    async def on_join(self, ctx):
        self._add("join", ctx)

    async def on_leave(self, ctx):
        self._add("leave", ctx)

    async def on_error(self, ctx):
        self._add("error", ctx)


_seq = 0


def chan(prefix: str = "test") -> str:
    global _seq
    _seq += 1
    sep = "" if prefix.endswith(":") else "-"
    return f"{prefix}{sep}{os.getpid()}-{_seq}-{os.urandom(3).hex()}"
