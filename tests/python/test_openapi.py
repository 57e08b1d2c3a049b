"""The server API matches docs/openapi.yaml: the document is valid OpenAPI,
every documented method exists, and real replies (successes and errors)
validate against the documented response schemas."""

from __future__ import annotations

import pathlib

import aiohttp
import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
REGISTRY = Registry().with_resource("spec", DRAFT202012.create_resource(SPEC))


def test_document_is_valid_openapi():
    validate_spec(SPEC)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _response_schema_ref(method: str, status: int) -> str:
    op = SPEC["paths"][f"/api/{method}"]["post"]
    resp = op["responses"][str(status)]
    if "$ref" in resp:
        # A shared response object: its schema sits under components.
        name = resp["$ref"].split("/")[-1]
        return "spec#/" + _pointer("components", "responses", name, "content", "application/json", "schema")
    return "spec#/" + _pointer("paths", f"/api/{method}", "post", "responses", str(status), "content", "application/json", "schema")


def check(method: str, status: int, body: dict) -> None:
    schema = {"$ref": _response_schema_ref(method, status)}
    errors = sorted(Draft202012Validator(schema, registry=REGISTRY).iter_errors(body), key=str)
    assert not errors, f"{method} {status} reply does not match the spec: {errors[0]} in {body}"


async def call(server, method: str, body, key: str = "dev-api-key"):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http_url}/api/{method}", json=body, headers={"X-API-Key": key}) as r:
            return r.status, await r.json(content_type=None)


# One representative request per documented method.
REQUESTS = {
    "publish": {"channel": "docs", "data": {"text": "hello"}, "tags": {"k": "v"}},
    "broadcast": {"channels": ["docs", "other"], "data": {"x": 1}},
    "subscribe": {"user": "alice", "channel": "docs"},
    "unsubscribe": {"user": "alice", "channel": "docs"},
    "disconnect": {"user": "nobody"},
    "refresh": {"user": "nobody", "expire_at": 4102444800},
    "presence": {"channel": "docs"},
    "presence_stats": {"channel": "docs"},
    "history": {"channel": "docs", "limit": 10, "reverse": True},
    "history_remove": {"channel": "gone"},
    "channels": {"pattern": "*"},
    "info": {},
    "batch": {"commands": [{"publish": {"channel": "docs", "data": {}}}, {"presence_stats": {"channel": "docs"}}]},
    # Auth methods, in an order that works: create, list, then change.
    "apikey_create": {"name": "docs"},
    "apikey_list": {},
    "user_create": {"username": "docsuser", "password": "long enough password"},
    "user_list": {},
    "oauth_client_create": {"name": "Docs", "redirect_uris": ["http://127.0.0.1:9/cb"]},
    "oauth_client_list": {},
    "session_list": {"user": "docsuser"},
    "signing_key_list": {},
    "signing_key_rotate": {},
    "user_disable": {"username": "docsuser"},
    # Rooms: create, look, end.
    "room_create": {"room": "docs-room", "mode": "sfu", "max_participants": 4, "empty_timeout": "1m"},
    "room_list": {},
    "room_get": {"room": "docs-room"},
    "room_delete": {"room": "docs-room"},
    # Call logs (the room above is one call).
    "call_list": {"limit": 10},
}

# Methods whose request needs an id from an earlier reply.
DEPENDENT = {"apikey_revoke", "oauth_client_delete", "session_end", "signing_key_retire",
             # Need a participant or track: their error replies are checked.
             "room_remove_participant", "room_mute_track",
             # Needs a call id from call_list.
             "call_get"}


def test_every_documented_method_is_covered_here():
    documented = {p.removeprefix("/api/") for p in SPEC["paths"]}
    assert documented == set(REQUESTS) | DEPENDENT


@pytest.mark.asyncio
async def test_replies_match_the_spec(server):
    for method, body in REQUESTS.items():
        status, reply = await call(server, method, body)
        assert status == 200, (method, status, reply)
        assert "result" in reply, (method, reply)
        check(method, 200, reply)
    # The dependent ones, with ids from the replies above.
    _, keys = await call(server, "apikey_list", {})
    _, clients = await call(server, "oauth_client_list", {})
    _, signing = await call(server, "signing_key_list", {})
    old_kid = next(k["kid"] for k in signing["result"]["keys"] if not k["active"])
    for method, body in [
        ("apikey_revoke", {"id": keys["result"]["keys"][0]["id"]}),
        ("oauth_client_delete", {"client_id": clients["result"]["clients"][0]["id"]}),
        ("signing_key_retire", {"kid": old_kid}),
    ]:
        status, reply = await call(server, method, body)
        assert status == 200 and "result" in reply, (method, reply)
        check(method, 200, reply)
    status, reply = await call(server, "session_end", {"session": "ses_unknown"})
    assert "error" in reply
    check("session_end", 200, reply)
    await call(server, "room_create", {"room": "docs-room-2"})
    for method, body in [
        ("room_remove_participant", {"room": "docs-room-2", "participant": "nobody"}),
        ("room_mute_track", {"room": "docs-room-2", "track": "TR-0", "muted": True}),
        ("room_get", {"room": "docs-room"}),
        ("room_create", {"room": "docs-room-2"}),
        ("room_create", {"room": "docs-room-3", "mode": "mesh"}),
        ("call_get", {"call": "call-unknown"}),
        ("call_list", {"limit": 0}),
    ]:
        status, reply = await call(server, method, body)
        assert status == 200 and "error" in reply, (method, reply)
        check(method, 200, reply)
    _, calls = await call(server, "call_list", {"room": "docs-room"})
    call_id = calls["result"]["calls"][0]["call"]
    status, reply = await call(server, "call_get", {"call": call_id})
    assert status == 200 and reply["result"]["call"]["room"] == "docs-room", reply
    check("call_get", 200, reply)


@pytest.mark.asyncio
async def test_errors_match_the_spec(server):
    status, reply = await call(server, "publish", {"data": {}})
    assert status == 200 and reply["error"]["code"] == 107
    check("publish", 200, reply)
    status, reply = await call(server, "history", {"channel": "docs", "limit": 5, "since": {"offset": 1, "epoch": "nope"}})
    assert reply["error"]["code"] == 112
    check("history", 200, reply)
    status, reply = await call(server, "info", {}, key="wrong")
    assert status == 401
    check("info", 401, reply)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http_url}/api/publish", data=b"{oops", headers={"X-API-Key": "dev-api-key"}) as r:
            assert r.status == 400
            check("publish", 400, await r.json(content_type=None))
        async with s.post(f"{server.http_url}/api/frobnicate", json={}, headers={"X-API-Key": "dev-api-key"}) as r:
            assert r.status == 404
