"""Every route the router knows, walked by a user of one tenant against another tenant's
room, event, alias, user, device and media: each answer (status, errcode, message and body, with
the ids themselves masked) must equal the answer for a room/event/alias/user/device/media of the
same shape that does not exist, and never speak of tenants or organizations.

The routes come from the router's own table (`register_all_routes`), so a route added
later by anyone is walked too:
- a path parameter the walker does not know fails the walk until someone says whether it
  names a thing (IDENTIFYING) or not (NEUTRAL);
- a route with no identifying path parameter is skipped, with its reason shown, only if it
  is listed in NOT_WALKED (`pytest -rs` prints them); a new unlisted one fails, so someone
  decides whether its body or query names another tenant's things (then it gets a case in
  CASES, like invite, /keys/query, /keys/claim, createRoom and sendToDevice here)."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pytest

from client_api.http import Route, Router
from client_api.routes import register_all_routes
from tests.server_harness import Http, ServerProcess
from tests.tenant_world import running_world

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
    "media_id": "media", "mediaId": "media",
}
# Path parameters that name nothing another tenant owns, with the value the walk uses
# (None: a fresh transaction id each time, so no answer is a replay of another).
NEUTRAL: dict[str, str | None] = {
    "event_type": "m.room.topic", "eventType": "m.room.topic", "state_key": "walk",
    "stateKey": "walk", "txn_id": None, "txnId": None, "field": "displayname",
    "receipt_type": "m.read", "receiptType": "m.read", "data_type": "org.example.walk",
    "type": "org.example.walk", "tag": "u.walk", "filter_id": "0", "filterId": "0",
    "version": "1", "session_id": "walk", "sessionId": "walk", "protocol": "walk",
    "kind": "override", "rule_id": "walk", "ruleId": "walk", "appservice_id": "walk",
    "rel_type": "m.reference", "relType": "m.reference",
    "server_name": SERVER, "serverName": SERVER, "file_name": "walk.txt", "fileName": "walk.txt",
    "network_id": "walk", "networkId": "walk",
    # admin task and report ids: tenant admins' view of them is tested in test_synapse_admin_api.py
    "delete_id": "walk", "purge_id": "walk", "report_id": "1",
}

_OWN = "the asker's own account, devices or settings only"
_NOTHING = "names nothing another tenant owns"
_ADMIN = ("admin API listing or task: a tenant admin sees only their tenant's entries "
          "(test_synapse_admin_api.py, test_audit_and_logs.py)")
# Routes without an identifying path parameter, and why walking them proves nothing.
NOT_WALKED = {
    "GET /_matrix/client/versions": _NOTHING,
    "GET /.well-known/matrix/client": _NOTHING,
    "GET /.well-known/matrix/server": _NOTHING,  # federation delegation (docs/federation.md)
    "GET /_matrix/client/v3/capabilities": _NOTHING,
    "POST /_matrix/client/v3/register": "creates an account; user ids are taken server-wide",
    "GET /_matrix/client/v3/register/available": "user ids are taken server-wide (names are "
                                                 "global, as in every Matrix server)",
    "GET /_matrix/client/v3/login": _NOTHING,
    "POST /_matrix/client/v3/login": "body: CASES 'login'",
    "POST /_matrix/client/v3/logout": _OWN,
    "POST /_matrix/client/v3/logout/all": _OWN,
    "GET /_matrix/client/v3/account/whoami": _OWN,
    "POST /_matrix/client/v3/account/password": _OWN,
    "POST /_matrix/client/v3/account/deactivate": _OWN,
    "POST /_matrix/client/v1/login/get_token": _OWN,
    "GET /_matrix/client/v3/devices": _OWN,
    "POST /_matrix/client/v3/delete_devices": _OWN + " (device ids of others are not the asker's)",
    "POST /_matrix/client/v3/createRoom": "body: CASES 'createRoom invite' and 'createRoom "
                                          "initial_state member'",
    "GET /_matrix/client/v3/joined_rooms": _OWN,
    "GET /_matrix/client/v3/publicRooms": "lists the asker's tenant only (test_tenancy.py)",
    "POST /_matrix/client/v3/publicRooms": "lists the asker's tenant only (test_tenancy.py)",
    "POST /_matrix/client/v3/user_directory/search": "finds the asker's tenant only (test_tenancy.py)",
    "GET /_matrix/client/v3/sync": "device lists and presence: test_tenancy.py",
    "POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync":
        "body: CASES 'sliding sync subscription'; lists, spaces filter and extensions: test_sliding_sync.py",
    "PUT /_matrix/client/v3/sendToDevice/{event_type}/{txn_id}": "body: CASES 'sendToDevice'",
    "GET /_matrix/client/v3/pushrules": _OWN,
    "GET /_matrix/client/v3/pushrules/global": _OWN,
    "GET /_matrix/client/v3/pushrules/global/{kind}/{rule_id}": "rule ids of kind room/sender: CASES",
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{rule_id}": "rule ids of kind room/sender: CASES",
    "DELETE /_matrix/client/v3/pushrules/global/{kind}/{rule_id}": "rule ids of kind room/sender: CASES",
    "GET /_matrix/client/v3/pushrules/global/{kind}/{rule_id}/enabled": _OWN,
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{rule_id}/enabled": _OWN,
    "GET /_matrix/client/v3/pushrules/global/{kind}/{rule_id}/actions": _OWN,
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{rule_id}/actions": _OWN,
    "GET /_matrix/client/v3/voip/turnServer": _NOTHING,
    "GET /_matrix/client/v3/thirdparty/protocols": _NOTHING,
    "GET /_matrix/client/v3/thirdparty/protocol/{protocol}": _NOTHING,
    "GET /_matrix/client/v3/thirdparty/location/{protocol}": _NOTHING,
    "GET /_matrix/client/v3/thirdparty/user/{protocol}": _NOTHING,
    "GET /_matrix/client/v3/thirdparty/location": "query alias: CASES 'thirdparty location'",
    "GET /_matrix/client/v3/thirdparty/user": "query userid: CASES 'thirdparty user'",
    "POST /_matrix/client/v3/keys/upload": _OWN,
    "POST /_matrix/client/v3/keys/query": "body: CASES 'keys/query'",
    "POST /_matrix/client/v3/keys/claim": "body: CASES 'keys/claim'",
    "GET /_matrix/client/v3/keys/changes": "test_tenancy.py (device lists)",
    "POST /_matrix/client/v3/keys/device_signing/upload": _OWN,
    "POST /_matrix/client/v3/keys/signatures/upload": "body: CASES 'keys/signatures/upload'",
    "POST /_matrix/client/v3/room_keys/version": _OWN,
    "GET /_matrix/client/v3/room_keys/version": _OWN,
    "GET /_matrix/client/v3/room_keys/version/{version}": _OWN,
    "PUT /_matrix/client/v3/room_keys/version/{version}": _OWN,
    "DELETE /_matrix/client/v3/room_keys/version/{version}": _OWN,
    "PUT /_matrix/client/v3/room_keys/keys": _OWN,
    "GET /_matrix/client/v3/room_keys/keys": _OWN,
    "DELETE /_matrix/client/v3/room_keys/keys": _OWN,
    "POST /_matrix/client/v1/appservice/{appservice_id}/ping": "application services only",
    "GET /_matrix/client/v3/pushrules/{_rest}": "malformed push-rule paths: 400 whatever they name",
    "PUT /_matrix/client/v3/pushrules/{_rest}": "malformed push-rule paths: 400 whatever they name",
    "DELETE /_matrix/client/v3/pushrules/{_rest}": "malformed push-rule paths: 400 whatever they name",
    "GET /_matrix/client/v3/events": "the asker's rooms; query room_id: CASES 'legacy events of a room'",
    "GET /_matrix/client/v3/initialSync": _OWN + " (the asker's rooms)",
    "GET /_matrix/federation/v1/openid/userinfo": "an OpenID token names only its own user",
    "GET /_matrix/client/v1/media/config": _NOTHING,
    "GET /_matrix/media/v3/config": _NOTHING,
    "GET /_matrix/client/v1/media/preview_url": "query url: a web page, nothing a tenant owns",
    "GET /_matrix/media/v3/preview_url": "query url: a web page, nothing a tenant owns",
    "POST /_matrix/media/v1/create": _OWN + " (reserves a new media id)",
    "POST /_matrix/media/v3/upload": _OWN + " (a new upload)",
    "POST /_matrix/client/v3/search": "body: CASES 'search in a room'",
    "GET /_matrix/client/v3/notifications": _OWN + " (notifications of the asker's rooms)",
    "GET /_matrix/client/v3/pushers": _OWN,
    "POST /_matrix/client/v3/pushers/set": _OWN + " (a pushkey is replaced only within the tenant: "
                                          "test_notifications.py)",
    "GET /_synapse/admin/v1/server_version": _NOTHING,
    "GET /_synapse/admin/v1/register": "shared-secret registration: a nonce, nothing a tenant owns",
    "POST /_synapse/admin/v1/register": "shared-secret registration: needs the server's secret",
    "GET /_homeserver/admin/v1/audit": _ADMIN,
    "GET /_homeserver/admin/v1/audit/export": _ADMIN,
    "GET /_synapse/admin/v2/users": _ADMIN,
    "GET /_synapse/admin/v1/rooms": _ADMIN,
    "GET /_synapse/admin/v1/event_reports": _ADMIN,
    "GET /_synapse/admin/v2/rooms/delete_status/{delete_id}": _ADMIN,
    "GET /_synapse/admin/v1/purge_history_status/{purge_id}": _ADMIN,
    "GET /_synapse/admin/v1/event_reports/{report_id}": _ADMIN,
    "DELETE /_synapse/admin/v1/event_reports/{report_id}": _ADMIN,
    "POST /_synapse/admin/v1/media/delete": _ADMIN + " (test_synapse_admin_media.py)",
    "POST /_synapse/admin/v1/media/{server_name}/delete": _ADMIN + " (test_synapse_admin_media.py)",
    "POST /_synapse/admin/v1/purge_media_cache": "server admins only; no remote media is cached",
}


# Routes whose path names a thing, but where "missing" cannot answer like "another
# tenant's" by nature; what they must do instead is tested where named.
NOT_COMPARABLE = {
    "PUT /_synapse/admin/v2/users/{user_id}": "creates a missing user (201), as in Synapse; user ids "
        "are taken server-wide like /register's; another tenant's user is 404 and untouched "
        "(test_synapse_admin_api.py)",
}


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")


def alias_slug(tenant: str) -> str:
    """The tenant's part of the alias space, as docs/tenancy.md defines it."""
    return tenant.replace("=", "=3d").replace(".", "=2e")


@dataclass
class Things:
    """One room, event, alias, user, device and piece of media, as a path or body names them."""
    room: str
    event: str
    alias: str
    user: str
    device: str
    media: str

    def of(self, kind: str, alias_form: bool = False) -> str:
        if kind == "room_or_alias":
            return self.alias if alias_form else self.room
        return getattr(self, kind)


@dataclass
class Person:
    name: str
    tenant: str | None
    http: Http = None  # type: ignore[assignment]
    things: Things = None  # type: ignore[assignment]
    missing: Things = None  # type: ignore[assignment]  # same shapes, none of them exists
    extra: dict = field(default_factory=dict)


def _missing_like(owner: Person) -> Things:
    """The same for the whole walk, so a write through one route is seen by the next, as
    for the real things."""
    real, local = owner.things, secrets.token_hex(4)
    alias = f"#{alias_slug(owner.tenant)}.gone{local}:{SERVER}" if owner.tenant else f"#gone{local}:{SERVER}"
    return Things(room="!" + _b64(32)[:len(real.room) - 1], event="$" + _b64(32)[:len(real.event) - 1],
                  alias=alias, user=f"@{owner.name}{local}:{SERVER}",
                  device="".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(len(real.device))),
                  media=_b64(48)[:len(real.media)])


UPLOADS = ("/_matrix/media/v3/upload", "/_matrix/client/v1/media/upload")


def _upload(h: Http) -> str:
    """The id of a file the person uploads, where the server serves uploads; otherwise an
    id nothing has (then no route names media either)."""
    router = Router()
    register_all_routes(router)
    for path in UPLOADS:
        if router.match("POST", path)[0] is not None:
            status, body = h.request("POST", path, raw=b"internal memo",
                                     headers={"Content-Type": "text/plain"})
            assert status == 200, body
            return body["content_uri"].rsplit("/", 1)[1]
    return _b64(24)


# ---- the world: one server, three groups (acme, globex.eu, no tenant) ------------------

def _device_keys(user_id: str, device_id: str) -> dict:
    return {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": _b64(32), f"ed25519:{device_id}": _b64(32)},
            "signatures": {user_id: {f"ed25519:{device_id}": _b64(64)}}}


def _setup_person(srv: ServerProcess, admin: Http, person: Person) -> None:
    """An account with a tenant, a device with keys, a public world-readable room (as
    exposed as a room gets) with an alias and a message."""
    _, login = Http(srv.base_url).request("POST", f"{V3}/register", {
        "username": person.name, "password": "walk-pw", "auth": {"type": "m.login.dummy"},
        "initial_device_display_name": f"{person.name}'s secret laptop"})
    h = person.http = Http(srv.base_url, login["access_token"])
    if person.tenant:
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{q(login['user_id'])}/tenant",
                                     {"tenant_id": person.tenant})
        assert status == 200, body
        # Tenanted askers are also their tenant's admins, so the walk asks the admin APIs
        # too as someone who may use them (a tenant admin's client routes are anyone's).
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{q(login['user_id'])}/admin_tenant",
                                     {"admin_tenant": person.tenant})
        assert status == 200, body
    status, room = h.request("POST", f"{V3}/createRoom", {
        "preset": "public_chat", "visibility": "public", "room_alias_name": f"hall{person.name}",
        "name": f"{person.name}'s hall", "initial_state": [{
            "type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]})
    assert status == 200, room
    status, sent = h.request("PUT", f"{V3}/rooms/{q(room['room_id'])}/send/m.room.message/t1",
                             {"msgtype": "m.text", "body": "internal figures"})
    assert status == 200, sent
    status, _ = h.request("POST", f"{V3}/keys/upload", {
        "device_keys": _device_keys(login["user_id"], login["device_id"]),
        "one_time_keys": {f"signed_curve25519:AAAA{i}": {"key": _b64(32)} for i in range(5)}})
    assert status == 200
    assert h.request("PUT", f"{V3}/pushrules/global/room/{q(room['room_id'])}", {"actions": []})[0] == 200
    person.things = Things(room=room["room_id"], event=sent["event_id"], alias=room["room_alias"],
                           user=login["user_id"], device=login["device_id"], media=_upload(h))
    person.missing = _missing_like(person)
    # The owner sees each of its things: the walk compares real things with missing ones.
    assert h.request("GET", f"{V3}/directory/room/{q(room['room_alias'])}")[1]["room_id"] == room["room_id"]
    assert h.request("GET", f"{V3}/rooms/{q(room['room_id'])}/event/{q(sent['event_id'])}")[0] == 200


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("walk")) as w:
        # globex.eu has a dot: its alias part must not be confused with another's.
        people = {p.name: p for p in (Person("alice", "acme"), Person("bob", "globex.eu"), Person("dave", None))}
        for p in people.values():
            _setup_person(w.srv, w.admin, p)
        yield w.srv, people


# (asker, owner of the other things): a tenant against a tenant, a tenant against the
# tenant-less group, and the tenant-less group against a tenant.
PAIRS = [("alice", "bob"), ("alice", "dave"), ("dave", "bob")]
PAIR_IDS = [f"{a}-vs-{b}" for a, b in PAIRS]


# ---- the routes ---------------------------------------------------------------------

def _all_routes() -> list[Route]:
    router = Router()
    register_all_routes(router)
    return router.routes


ROUTES = _all_routes()
_GROUP = re.compile(r"\(\?P<(\w+)>\[\^/\]\+\)")


def path_template(route: Route) -> tuple[str, list[str]]:
    """The route's path with `{name}` for each parameter, and the parameter names."""
    source = route.regex.pattern
    assert source.startswith("^") and source.endswith("$"), source
    source = source[1:-1].replace("(?:v3|r0)", "v3")
    if source.endswith("/?"):
        source = source[:-2]
    names = _GROUP.findall(source)
    # A catch-all (".*") matches any rest of the path: it names nothing.
    template = _GROUP.sub(lambda m: "{" + m.group(1) + "}", source).replace(".*", "{_rest}")
    assert not re.search(r"[\\()\[\]*+?|^$]", re.sub(r"\{\w+\}", "", template)), \
        f"{route.method} {route.regex.pattern}: teach path_template this regex construct"
    return template, names


def route_name(route: Route) -> str:
    return f"{route.method} {path_template(route)[0]}"


def identifying_params(route: Route) -> list[str]:
    _, names = path_template(route)
    unknown = [n for n in names if n not in IDENTIFYING and n not in NEUTRAL]
    assert not unknown, (f"{route_name(route)}: path parameter(s) {unknown} unknown to the walker: add "
                         "them to IDENTIFYING (names a room/event/alias/user/device/media) or NEUTRAL")
    return [n for n in names if n in IDENTIFYING]


def build_path(route: Route, values: dict[str, str]) -> str:
    template, names = path_template(route)
    filled = {n: values[n] if n in values else (NEUTRAL[n] or "walk" + secrets.token_hex(6)) for n in names}
    return template.format(_rest="walk", **{k: q(v) for k, v in filled.items()})


# ---- asking, and comparing answers -----------------------------------------------------

def body_for(things: Things) -> dict[str, Any]:
    """One body that passes every route's shape checks, naming the variant's things."""
    return {"msgtype": "m.text", "body": "walk", "typing": False, "timeout": 1000,
            "user_id": things.user, "room_id": things.room, "visibility": "public",
            "reason": "walk", "displayname": "walk", "display_name": "walk", "presence": "online",
            "m.read": things.event, "m.fully_read": things.event, "topic": "walk",
            "new_version": "12"}


_VOLATILE = ("event_id", "session", "next_batch", "pos")


def _request(http: Http, method: str, path: str, body: dict | None) -> tuple[int, Any]:
    """Like Http.request, but a body that is not JSON (a download) comes back as its hash."""
    req = urllib.request.Request(http.base_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if http.token:
        req.add_header("Authorization", f"Bearer {http.token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, {"<bytes>": hashlib.sha256(payload).hexdigest()}


def ask(http: Http, method: str, path: str, body: dict | None, masks: dict[str, str]) -> tuple:
    """(status, body) with the ids asked about masked and server-made ids blanked."""
    status, answer = _request(http, method, path, body)
    assert status < 500, (method, path, answer)
    text = json.dumps(answer, sort_keys=True)
    for real, placeholder in sorted(masks.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(real)[1:-1], placeholder).replace(q(real), placeholder)
    masked = json.loads(text)
    if isinstance(masked, dict):
        masked = {k: ("<volatile>" if k in _VOLATILE else v) for k, v in masked.items()}
    return status, masked


def assert_alike(real: tuple, gone: tuple, what: Any) -> None:
    assert real == gone, (what, real, gone)
    text = json.dumps(real[1]).lower()
    assert "organi" not in text and "tenant" not in text, (what, real)


def _masks(*pairs: tuple[str, str, str]) -> dict[str, str]:
    masks = {}
    for real, gone, placeholder in pairs:
        if real != gone:
            masks[real] = masks[gone] = placeholder
    return masks


def variants(identifying: list[str], asker: Person, other: Person):
    """(label, values naming the other's things, values naming missing things): each
    identifying parameter alone (the others naming the asker's own things, so the one
    that differs decides), then all together; a room-or-alias parameter in both forms."""
    picks = [[n] for n in identifying] + ([identifying] if len(identifying) > 1 else [])
    for pick in picks:
        forms = (False, True) if any(IDENTIFYING[n] == "room_or_alias" for n in pick) else (False,)
        for alias_form in forms:
            real_vals, gone_vals = {}, {}
            for n in identifying:
                kind = IDENTIFYING[n]
                source_real, source_gone = (other.things, other.missing) if n in pick else (asker.things,) * 2
                real_vals[n] = source_real.of(kind, alias_form)
                gone_vals[n] = source_gone.of(kind, alias_form)
            yield "+".join(pick) + (" (alias)" if alias_form else ""), real_vals, gone_vals


def _things_with(base: Things, values: dict[str, str]) -> Things:
    changes = {}
    for n, v in values.items():
        kind = IDENTIFYING[n]
        changes["alias" if kind == "room_or_alias" and v.startswith("#") else
                "room" if kind == "room_or_alias" else kind] = v
    return replace(base, **changes)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("route", ROUTES, ids=[route_name(r) for r in ROUTES])
def test_route_answers_another_tenants_things_as_missing(world, route, pair):
    srv, people = world
    if route_name(route) in NOT_COMPARABLE:
        pytest.skip(f"not walked: {route_name(route)}: {NOT_COMPARABLE[route_name(route)]}")
    identifying = identifying_params(route)
    if not identifying:
        name = route_name(route)
        assert name in NOT_WALKED, (f"{name} has no room/event/alias/user/device/media in its path: list it in "
                                    "NOT_WALKED with why, and give it a case in CASES if its body or "
                                    "query names such a thing")
        pytest.skip(f"not walked: {name}: {NOT_WALKED[name]}")
    asker, other = people[pair[0]], people[pair[1]]
    if not route.auth and other.tenant is None:
        pytest.skip("needs no token: anyone may ask anonymously, and anonymous askers are in the "
                    "group without a tenant, whose things these are")
    askers = [(asker.name, asker.http)]
    if not route.auth and other.tenant is not None:
        askers.append(("anonymous", Http(srv.base_url)))  # walled like users without a tenant
    for label, real_vals, gone_vals in variants(identifying, asker, other):
        masks = _masks(*((real_vals[n], gone_vals[n], f"<{n}>") for n in identifying))
        has_body = route.method in ("PUT", "POST")
        for who, http in askers:
            real = ask(http, route.method, build_path(route, real_vals),
                       body_for(_things_with(asker.things, real_vals)) if has_body else None, masks)
            gone = ask(http, route.method, build_path(route, gone_vals),
                       body_for(_things_with(asker.things, gone_vals)) if has_body else None, masks)
            assert_alike(real, gone, (route_name(route), label, who))


def test_the_walk_sees_the_routes():
    """Guards the walker: a parsing mistake must not quietly turn routes into skips."""
    router = Router()
    register_all_routes(router)
    walked = {route_name(r) for r in ROUTES if identifying_params(r)}
    for needed in ("GET /_matrix/client/v3/rooms/{room_id}/aliases",
                   "PUT /_matrix/client/v3/directory/room/{alias}",
                   "POST /_matrix/client/v3/join/{room_id_or_alias}",
                   "GET /_matrix/client/v3/rooms/{room_id}/event/{event_id}",
                   "GET /_matrix/client/v3/profile/{user_id}",
                   "DELETE /_matrix/client/v3/devices/{device_id}",
                   "GET /_matrix/client/v3/directory/list/room/{room_id}"):
        assert needed in walked, needed
    for route in ROUTES:  # each built path reaches its own route
        path = build_path(route, {n: "!x" for n in identifying_params(route)})
        assert router.match(route.method, path)[0].regex.pattern == route.regex.pattern, route_name(route)
    assert not set(NOT_WALKED) - {route_name(r) for r in ROUTES}, "NOT_WALKED lists routes that are gone"


# ---- requests whose body or query names another tenant's things ------------------------

def _own_alias_name(asker: Person) -> str:
    """A fresh alias in the asker's own part, so only the body's room decides the answer."""
    local = f"walk{secrets.token_hex(4)}"
    return f"#{alias_slug(asker.tenant)}.{local}:{SERVER}" if asker.tenant else f"#{local}:{SERVER}"


def _txn() -> str:
    return "walk" + secrets.token_hex(6)


# name: (method, path(asker, things), body(things) or None)
Case = tuple[str, Callable[[Person, Things], str], Callable[[Things], Any]]
CASES: dict[str, Case] = {
    "invite": ("POST", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/invite", lambda t: {"user_id": t.user}),
    "kick": ("POST", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/kick", lambda t: {"user_id": t.user}),
    "ban": ("POST", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/ban", lambda t: {"user_id": t.user}),
    "unban": ("POST", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/unban", lambda t: {"user_id": t.user}),
    "createRoom invite": ("POST", lambda a, t: f"{V3}/createRoom", lambda t: {"invite": [t.user]}),
    "createRoom initial_state member": ("POST", lambda a, t: f"{V3}/createRoom", lambda t: {"initial_state": [
        {"type": "m.room.member", "state_key": t.user, "content": {"membership": "invite"}}]}),
    "keys/query": ("POST", lambda a, t: f"{V3}/keys/query", lambda t: {"device_keys": {t.user: []}}),
    "keys/query device": ("POST", lambda a, t: f"{V3}/keys/query",
                          lambda t: {"device_keys": {t.user: [t.device]}}),
    "keys/claim": ("POST", lambda a, t: f"{V3}/keys/claim",
                   lambda t: {"one_time_keys": {t.user: {t.device: "signed_curve25519"}}}),
    "keys/signatures/upload": ("POST", lambda a, t: f"{V3}/keys/signatures/upload",
                               lambda t: {t.user: {t.device: {"user_id": t.user, "device_id": t.device}}}),
    "sendToDevice": ("PUT", lambda a, t: f"{V3}/sendToDevice/m.walk/{_txn()}",
                     lambda t: {"messages": {t.user: {t.device: {"secret": "walk"}, "*": {"x": 1}}}}),
    "alias for a room": ("PUT", lambda a, t: f"{V3}/directory/room/{q(_own_alias_name(a))}",
                         lambda t: {"room_id": t.room}),
    "read_markers": ("POST", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/read_markers",
                     lambda t: {"m.fully_read": t.event, "m.read": t.event}),
    "redaction through send": ("PUT", lambda a, t: f"{V3}/rooms/{q(a.things.room)}/send/m.room.redaction/"
                                                   f"{_txn()}", lambda t: {"redacts": t.event}),
    "push rule for a room": ("PUT", lambda a, t: f"{V3}/pushrules/global/room/{q(t.room)}",
                             lambda t: {"actions": ["dont_notify"]}),
    "push rule read back": ("GET", lambda a, t: f"{V3}/pushrules/global/room/{q(t.room)}", lambda t: None),
    "push rule for a sender": ("PUT", lambda a, t: f"{V3}/pushrules/global/sender/{q(t.user)}",
                               lambda t: {"actions": ["dont_notify"]}),
    "login": ("POST", lambda a, t: f"{V3}/login", lambda t: {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": t.user}, "password": "wrong"}),
    "search in a room": ("POST", lambda a, t: f"{V3}/search", lambda t: {"search_categories": {"room_events": {
        "search_term": "internal figures", "filter": {"rooms": [t.room]}}}}),
    "legacy events of a room": ("GET", lambda a, t: f"{V3}/events?room_id={q(t.room)}&timeout=0",
                                lambda t: None),
    "thirdparty location": ("GET", lambda a, t: f"{V3}/thirdparty/location?alias={q(t.alias)}", lambda t: None),
    "thirdparty user": ("GET", lambda a, t: f"{V3}/thirdparty/user?userid={q(t.user)}", lambda t: None),
    "sliding sync subscription": ("POST", lambda a, t: "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
                                  lambda t: {"conn_id": _txn(), "room_subscriptions": {t.room: {
                                      "timeline_limit": 10, "required_state": [["*", "*"]]}},
                                      "lists": {"l": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": [],
                                                      "filters": {"spaces": [t.room]}}}}),
}


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_body_naming_another_tenants_things_answers_as_missing(world, case, pair):
    _, people = world
    asker, other = people[pair[0]], people[pair[1]]
    masks = _masks(*((other.things.of(k), other.missing.of(k), f"<{k}>")
                     for k in ("room", "event", "alias", "user", "device", "media")))
    method, path, body = CASES[case]
    _, before = asker.http.request("GET", f"{V3}/joined_rooms")
    real = ask(asker.http, method, path(asker, other.things), body(other.things), masks)
    gone = ask(asker.http, method, path(asker, other.missing), body(other.missing), masks)
    assert_alike(real, gone, case)
    if case.startswith("createRoom"):  # refused, and nothing half-made
        assert real[0] == 403 and asker.http.request("GET", f"{V3}/joined_rooms")[1] == before


def test_to_device_messages_never_cross(world):
    """sendToDevice answers alike (above), and nothing arrives on the other side."""
    _, people = world
    alice, bob = people["alice"], people["bob"]
    _, start = bob.http.request("GET", f"{V3}/sync?timeout=0")
    msg = {"messages": {bob.things.user: {bob.things.device: {"secret": "from acme"}}}}
    assert alice.http.request("PUT", f"{V3}/sendToDevice/m.walk/{_txn()}", msg)[0] == 200
    _, later = bob.http.request("GET", f"{V3}/sync?timeout=0&since={start['next_batch']}")
    assert later["to_device"]["events"] == []
