"""Every route the router knows, walked by a user of one tenant against another tenant's
room, event, alias, user and device: each answer (status, errcode, message and body, with
the ids themselves masked) must equal the answer for a room/event/alias/user/device of the
same shape that does not exist.

The routes come from the router's own table (`register_all_routes`), so a route added
later by anyone is walked too. A path parameter the walker does not know fails the walk
until someone says whether it names a thing (IDENTIFYING) or not (NEUTRAL); routes without
an identifying parameter are skipped with the reason shown (`pytest -rs` lists them).
Routes whose body names a user, room or event have explicit cases at the end."""
from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest

from client_api.http import Route, Router
from client_api.routes import register_all_routes
from tests.server_harness import REPO, Http, ServerProcess

V3 = "/_matrix/client/v3"
SERVER = "test.local"

# Path parameter name -> the kind of thing it names.
IDENTIFYING = {
    "room_id": "room", "roomId": "room",
    "room_id_or_alias": "room_or_alias", "roomIdOrAlias": "room_or_alias",
    "alias": "alias", "room_alias": "alias", "roomAlias": "alias",
    "event_id": "event", "eventId": "event",
    "user_id": "user", "userId": "user",
    "device_id": "device", "deviceId": "device",
}
# Path parameters that name nothing another tenant owns, with the value the walker uses.
NEUTRAL = {
    "event_type": "m.room.topic", "eventType": "m.room.topic", "state_key": "walk",
    "stateKey": "walk", "txn_id": None, "txnId": None, "field": "displayname",
    "receipt_type": "m.read", "receiptType": "m.read", "data_type": "org.example.walk",
    "type": "org.example.walk", "tag": "u.walk", "filter_id": "0", "filterId": "0",
    "version": "1", "session_id": "walk", "sessionId": "walk", "protocol": "walk",
    "kind": "override", "rule_id": "walk", "ruleId": "walk", "appservice_id": "walk",
    "rel_type": "m.reference", "relType": "m.reference",
}


@dataclass
class Things:
    """One room, event, alias, user and device, as a path or body would name them."""
    room: str
    event: str
    alias: str
    user: str
    device: str

    def value(self, kind: str) -> str:
        return self.room if kind == "room_or_alias" else getattr(self, kind)


@dataclass
class Person:
    name: str
    tenant: str | None
    http: Http = None  # type: ignore[assignment]
    user_id: str = ""
    device_id: str = ""
    things: Things = None  # type: ignore[assignment]
    extra: dict = field(default_factory=dict)


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")


def alias_slug(tenant: str) -> str:
    """The tenant's part of the alias space, as docs/tenancy.md defines it."""
    return tenant.replace("=", "=3d").replace(".", "=2e")


def missing_like(owner: Person) -> Things:
    """Things of the same shape as the owner's, none of which exist; the same ones for the
    whole walk, so a write through one route is seen by the next, as for the real things."""
    if "missing" not in owner.extra:
        owner.extra["missing"] = _make_missing(owner)
    return owner.extra["missing"]


def _make_missing(owner: Person) -> Things:
    real = owner.things
    local = secrets.token_hex(4)
    alias = f"#{alias_slug(owner.tenant)}.gone{local}:{SERVER}" if owner.tenant else f"#gone{local}:{SERVER}"
    return Things(room="!" + _b64(32)[:len(real.room) - 1], event="$" + _b64(32)[:len(real.event) - 1],
                  alias=alias, user=f"@{owner.name}{local}:{SERVER}",
                  device="".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(len(real.device))))


# ---- the world: one server, three organizations ---------------------------------------

def _device_keys(user_id: str, device_id: str) -> dict:
    return {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": _b64(32), f"ed25519:{device_id}": _b64(32)},
            "signatures": {user_id: {f"ed25519:{device_id}": _b64(64)}}}


def _setup_person(srv: ServerProcess, admin: Http, person: Person) -> None:
    http = Http(srv.base_url)
    _, login = http.request("POST", f"{V3}/register", {
        "username": person.name, "password": "walk-pw", "auth": {"type": "m.login.dummy"},
        "initial_device_display_name": f"{person.name}'s secret laptop"})
    person.http = Http(srv.base_url, login["access_token"])
    person.user_id, person.device_id = login["user_id"], login["device_id"]
    if person.tenant:
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{person.user_id}/tenant",
                                     {"tenant_id": person.tenant})
        assert status == 200, body
    h = person.http
    status, room = h.request("POST", f"{V3}/createRoom", {
        "preset": "public_chat", "visibility": "public", "room_alias_name": f"hall{person.name}",
        "name": f"{person.name}'s hall", "initial_state": [{
            "type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]})
    assert status == 200, room
    status, sent = h.request("PUT", f"{V3}/rooms/{q(room['room_id'])}/send/m.room.message/t1",
                             {"msgtype": "m.text", "body": "internal figures"})
    assert status == 200, sent
    status, _ = h.request("POST", f"{V3}/keys/upload", {
        "device_keys": _device_keys(person.user_id, person.device_id),
        "one_time_keys": {f"signed_curve25519:AAAA{i}": {"key": _b64(32)} for i in range(5)}})
    assert status == 200
    alias = room.get("room_alias") or f"#hall{person.name}:{SERVER}"
    person.things = Things(room=room["room_id"], event=sent["event_id"], alias=alias,
                           user=person.user_id, device=person.device_id)
    # The owner sees every one of its things: the walk compares real things with missing ones.
    assert h.request("GET", f"{V3}/directory/room/{q(alias)}")[1]["room_id"] == room["room_id"]
    assert h.request("GET", f"{V3}/rooms/{q(room['room_id'])}/event/{q(sent['event_id'])}")[0] == 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("walk"))
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "walkadmin", "--password",
                    "adm-pw", "--admin", "--config", str(srv.config_path)],
                   cwd=REPO, check=True, capture_output=True)
    srv.start()
    _, login = Http(srv.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "user": "walkadmin", "password": "adm-pw"})
    admin = Http(srv.base_url, login["access_token"])
    people = {p.name: p for p in (Person("alice", "acme"), Person("carol", "acme"),
                                  Person("bob", "globex.eu"), Person("dave", None))}
    for p in people.values():
        _setup_person(srv, admin, p)
    # carol shares alice's room, so alice has a colleague to name in bodies.
    assert people["carol"].http.request("POST", f"{V3}/join/{q(people['alice'].things.room)}", {})[0] == 200
    yield srv, people
    srv.stop()
    srv.stop_postgres()


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# ---- the routes ---------------------------------------------------------------------

def _all_routes() -> list[Route]:
    router = Router()
    register_all_routes(router)
    return router.routes


def _route_id(route: Route) -> str:
    return f"{route.method} {route.regex.pattern.strip('^$')}"


_GROUP = re.compile(r"\(\?P<(\w+)>\[\^/\]\+\)")


def path_template(route: Route) -> tuple[str, list[str]]:
    """The route's path with `{name}` for each parameter, and the parameter names."""
    source = route.regex.pattern
    assert source.startswith("^") and source.endswith("$"), source
    source = source[1:-1].replace("(?:v3|r0)", "v3")
    if source.endswith("/?"):
        source = source[:-2]
    names = _GROUP.findall(source)
    template = _GROUP.sub(lambda m: "{" + m.group(1) + "}", source)
    leftover = re.sub(r"\{\w+\}", "", template)
    assert not re.search(r"[\\()\[\]*+?|^$]", leftover), \
        f"{_route_id(route)}: teach path_template this regex construct"
    return template, names


def classify(route: Route) -> tuple[list[str], str | None]:
    """(identifying parameter names, reason to skip or None)."""
    _, names = path_template(route)
    unknown = [n for n in names if n not in IDENTIFYING and n not in NEUTRAL]
    assert not unknown, (f"{_route_id(route)}: path parameter(s) {unknown} unknown to the walker: add them "
                         "to IDENTIFYING (it names a room/event/alias/user/device) or NEUTRAL")
    identifying = [n for n in names if n in IDENTIFYING]
    if not identifying:
        return [], "no room, event, alias, user or device in its path"
    return identifying, None


ROUTES = _all_routes()


# ---- one request and its comparable answer -------------------------------------------

def build_path(route: Route, values: dict[str, str]) -> str:
    template, names = path_template(route)
    filled = {}
    for name in names:
        if name in values:
            filled[name] = values[name]
        elif NEUTRAL[name] is None:  # transaction ids: fresh each time, never deduplicated
            filled[name] = "walk" + secrets.token_hex(6)
        else:
            filled[name] = NEUTRAL[name]
    return template.format(**{k: q(v) for k, v in filled.items()})


def body_for(things: Things) -> dict[str, Any]:
    """One body that satisfies every route's shape checks, naming the variant's things."""
    return {"msgtype": "m.text", "body": "walk", "typing": False, "timeout": 1000,
            "user_id": things.user, "room_id": things.room, "visibility": "public",
            "reason": "walk", "displayname": "walk", "display_name": "walk", "presence": "online",
            "m.read": things.event, "m.fully_read": things.event, "topic": "walk"}


_VOLATILE = ("event_id", "session", "next_batch")


def comparable(status: int, body: Any, masks: dict[str, str]) -> tuple:
    text = json.dumps(body, sort_keys=True)
    for real, placeholder in sorted(masks.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(real)[1:-1], placeholder)
    masked = json.loads(text)
    if isinstance(masked, dict):
        masked = {k: ("<volatile>" if k in _VOLATILE else v) for k, v in masked.items()}
    return status, masked


def ask(asker: Person | None, method: str, path: str, body: dict | None, masks: dict[str, str]) -> tuple:
    if asker is None:
        status, answer = Http(WORLD_URL[0]).request(method, path, body)
    else:
        status, answer = asker.http.request(method, path, body)
    assert status < 500, (method, path, answer)
    return comparable(status, answer, masks)


WORLD_URL: list[str] = []


def assert_no_tenant_words(answer: tuple, what: str) -> None:
    text = json.dumps(answer[1]).lower()
    assert "organi" not in text and "tenant" not in text, (what, answer)


PAIRS = [("alice", "bob"), ("alice", "dave"), ("dave", "bob")]


def variants(identifying: list[str], asker: Person, other: Person) -> list[tuple[str, dict, dict]]:
    """(label, values naming the other tenant's things, values naming missing things): each
    identifying parameter alone (the others naming the asker's own things), then all together."""
    missing = missing_like(other)
    own = asker.things
    out = []
    picks = [[n] for n in identifying] + ([identifying] if len(identifying) > 1 else [])
    for pick in picks:
        for alias_form in (False, True):
            if alias_form and not any(IDENTIFYING[n] == "room_or_alias" for n in pick):
                continue
            real_vals, gone_vals = {}, {}
            for n in identifying:
                kind = IDENTIFYING[n]
                if n in pick:
                    attr = "alias" if (kind == "room_or_alias" and alias_form) else kind
                    real_vals[n] = getattr(other.things, "room" if attr == "room_or_alias" else attr)
                    gone_vals[n] = getattr(missing, "room" if attr == "room_or_alias" else attr)
                else:
                    real_vals[n] = gone_vals[n] = own.value(kind)
            label = "+".join(pick) + (" (alias)" if alias_form else "")
            out.append((label, real_vals, gone_vals))
    return out


def _things_for(values: dict[str, str], base: Things) -> Things:
    t = Things(**vars(base))
    for n, v in values.items():
        kind = IDENTIFYING[n]
        if kind == "room_or_alias":
            if v.startswith("!"):
                t.room = v
            else:
                t.alias = v
        else:
            setattr(t, kind, v)
    return t


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-vs-{b}" for a, b in PAIRS])
@pytest.mark.parametrize("route", ROUTES, ids=[_route_id(r) for r in ROUTES])
def test_route_answers_another_tenants_things_as_missing(world, route, pair):
    srv, people = world
    WORLD_URL[:] = [srv.base_url]
    identifying, skip = classify(route)
    if skip:
        pytest.skip(skip)
    asker, other = people[pair[0]], people[pair[1]]
    askers: list[Person | None] = [asker]
    if not route.auth and other.tenant is not None:
        askers.append(None)  # anonymous requests are walled like tenant-less users
    for label, real_vals, gone_vals in variants(identifying, asker, other):
        masks = {}
        for n in identifying:
            if real_vals[n] != gone_vals[n]:
                masks[real_vals[n]] = masks[gone_vals[n]] = f"<{n}>"
        for who in askers:
            real_path = build_path(route, real_vals)
            gone_path = build_path(route, gone_vals)
            has_body = route.method in ("PUT", "POST")
            real_body = body_for(_things_for(real_vals, asker.things)) if has_body else None
            gone_body = body_for(_things_for(gone_vals, asker.things)) if has_body else None
            real = ask(who, route.method, real_path, real_body, masks)
            gone = ask(who, route.method, gone_path, gone_body, masks)
            what = (label, "anonymous" if who is None else who.name, route.method, real_path, gone_path)
            assert real == gone, (what, real, gone)
            assert_no_tenant_words(real, what)


def test_the_walk_covers_the_routes_it_must():
    """Guards the walker itself: parsing mistakes would turn every route into a skip."""
    walked = {_route_id(r) for r in ROUTES if classify(r)[1] is None}
    for needed in ("GET /_matrix/client/(?:v3|r0)/rooms/(?P<room_id>[^/]+)/aliases",
                   "PUT /_matrix/client/(?:v3|r0)/directory/room/(?P<alias>[^/]+)",
                   "POST /_matrix/client/(?:v3|r0)/join/(?P<room_id_or_alias>[^/]+)",
                   "GET /_matrix/client/(?:v3|r0)/rooms/(?P<room_id>[^/]+)/event/(?P<event_id>[^/]+)",
                   "GET /_matrix/client/(?:v3|r0)/profile/(?P<user_id>[^/]+)",
                   "DELETE /_matrix/client/(?:v3|r0)/devices/(?P<device_id>[^/]+)",
                   "GET /_matrix/client/(?:v3|r0)/directory/list/room/(?P<room_id>[^/]+)"):
        assert needed in walked, needed
    for route in ROUTES:
        template, _ = path_template(route)
        path = build_path(route, {n: "!x" for n in classify(route)[0]})
        assert route.regex.match(path), (template, path)
