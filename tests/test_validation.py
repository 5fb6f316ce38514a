"""Request validation and error answers as the spec (and Synapse) give them: stored
filters, m.room.canonical_alias content, events the asker may not see, redactions across
rooms, malformed push-rule paths, transaction id limits; and the shapes of joined_members
and of /messages for a room the user has left."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.server_harness import Http, new_user
from tests.tenant_world import create_room, joined_room

V3 = "/_matrix/client/v3"


def _user(server, unique, prefix: str = "v") -> Http:
    return new_user(server.base_url, unique(prefix))


def _send(user: Http, room_id: str, text: str) -> str:
    status, resp = user.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{quote(text)}",
                                {"msgtype": "m.text", "body": text})
    assert status == 200, resp
    return resp["event_id"]


# ---- filters -----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"room": "x"},
    {"room": {"timeline": {"limit": "ten"}}},
    {"room": {"state": {"types": "m.room.name"}}},
    {"presence": 5},
    {"event_fields": "content"},
    {"event_format": "xml"},
])
def test_invalid_filter_is_refused_when_uploaded(server, unique, body):
    user = _user(server, unique)
    status, resp = user.request("POST", f"{V3}/user/{quote(user.user_id)}/filter", body)
    assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM"), resp


def test_valid_filter_is_stored_and_used_by_sync(server, unique):
    user = _user(server, unique)
    room_id = create_room(user)
    body = {"room": {"timeline": {"limit": 1}}, "presence": {"types": []}}
    status, resp = user.request("POST", f"{V3}/user/{quote(user.user_id)}/filter", body)
    assert status == 200, resp
    status, sync = user.request("GET", f"{V3}/sync?timeout=0&filter={resp['filter_id']}")
    assert status == 200, sync
    assert len(sync["rooms"]["join"][room_id]["timeline"]["events"]) == 1


# ---- m.room.canonical_alias --------------------------------------------------------------

def _put_alias_event(user: Http, room_id: str, content: dict):
    return user.request("PUT", f"{V3}/rooms/{quote(room_id)}/state/m.room.canonical_alias", content)


def test_canonical_alias_must_point_to_the_room(server, unique):
    user = _user(server, unique)
    here, elsewhere = create_room(user), create_room(user)
    mine, theirs = f"#{unique('here')}:test.local", f"#{unique('there')}:test.local"
    assert user.request("PUT", f"{V3}/directory/room/{quote(mine)}", {"room_id": here})[0] == 200
    assert user.request("PUT", f"{V3}/directory/room/{quote(theirs)}", {"room_id": elsewhere})[0] == 200
    missing = f"#{unique('none')}:test.local"
    for content in ({"alias": theirs}, {"alias": missing}, {"alias": mine, "alt_aliases": [theirs]},
                    {"alt_aliases": [missing]}):
        status, resp = _put_alias_event(user, here, content)
        assert (status, resp["errcode"]) == (400, "M_BAD_ALIAS"), (content, resp)
    for content in ({"alias": "not-an-alias"}, {"alias": 5}, {"alt_aliases": "#a:test.local"},
                    {"alt_aliases": ["#:test.local"]}, {"alt_aliases": [mine, None]}):
        status, resp = _put_alias_event(user, here, content)
        assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM"), (content, resp)
    status, state = user.request("GET", f"{V3}/rooms/{quote(here)}/state/m.room.canonical_alias")
    assert status == 404  # nothing got through

    # Aliases that point here, and other servers' aliases (which cannot be asked), pass.
    status, resp = _put_alias_event(user, here, {"alias": mine, "alt_aliases": ["#x:elsewhere.example"]})
    assert status == 200, resp
    # An alias removed from the directory afterwards does not block other changes.
    assert user.request("DELETE", f"{V3}/directory/room/{quote(mine)}")[0] == 200
    status, resp = _put_alias_event(user, here, {"alias": mine, "alt_aliases": []})
    assert status == 200, resp
    assert _put_alias_event(user, here, {})[0] == 200  # removing the alias is always fine


def test_canonical_alias_refusal_comes_after_permission(server, unique):
    owner, member = _user(server, unique, "own"), _user(server, unique, "mem")
    room_id = create_room(owner, preset="public_chat")
    assert member.request("POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200
    status, resp = _put_alias_event(member, room_id, {"alias": f"#{unique('n')}:test.local"})
    assert (status, resp["errcode"]) == (403, "M_FORBIDDEN"), resp


# ---- events the asker may not see --------------------------------------------------------

def test_event_of_a_room_the_asker_is_not_in_is_not_found(server, unique):
    owner, stranger = _user(server, unique, "own"), _user(server, unique, "str")
    room_id = create_room(owner)
    event_id = _send(owner, room_id, "private")
    status, resp = stranger.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(event_id)}")
    assert (status, resp["errcode"]) == (404, "M_NOT_FOUND"), resp
    assert owner.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(event_id)}")[0] == 200


def test_redacting_an_event_of_another_room_is_a_bad_request(server, unique):
    user = _user(server, unique)
    room_a, room_b = create_room(user), create_room(user)
    event_id = _send(user, room_a, "keep")
    status, resp = user.request("PUT", f"{V3}/rooms/{quote(room_b)}/redact/{quote(event_id)}/r1", {})
    assert (status, resp["errcode"]) == (400, "M_UNKNOWN"), resp
    status, ev = user.request("GET", f"{V3}/rooms/{quote(room_a)}/event/{quote(event_id)}")
    assert ev["content"]["body"] == "keep"


# ---- push-rule paths ---------------------------------------------------------------------

@pytest.mark.parametrize("method, path, body", [
    ("GET", "/pushrules/override/.m.rule.master", None),             # no scope
    ("PUT", "/pushrules/override/myrule", {"actions": []}),          # no scope
    ("GET", "/pushrules/device/override/.m.rule.master", None),      # unknown scope
    ("DELETE", "/pushrules/device/override/myrule", None),
    ("GET", "/pushrules/global/override/", None),                    # empty rule id
    ("PUT", "/pushrules/global/override/", {"actions": []}),
    ("DELETE", "/pushrules/global/override/", None),
    ("GET", "/pushrules/global/override/.m.rule.master/colour", None),  # unknown attribute
    ("PUT", "/pushrules/global/override/.m.rule.master/colour", {"colour": "red"}),
])
def test_malformed_push_rule_paths_are_unrecognized(server, unique, method, path, body):
    user = _user(server, unique)
    status, resp = user.request(method, V3 + path, body)
    assert (status, resp["errcode"]) == (400, "M_UNRECOGNIZED"), resp


@pytest.mark.parametrize("method, body", [("GET", None), ("PUT", {"actions": []}), ("DELETE", None)])
def test_unknown_push_rule_kind_is_invalid(server, unique, method, body):
    user = _user(server, unique)
    status, resp = user.request(method, f"{V3}/pushrules/global/nosuchkind/rule", body)
    assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM"), resp


# ---- response shapes ---------------------------------------------------------------------

def test_joined_members_omit_absent_profile_fields(server, unique):
    user = _user(server, unique)
    room_id = create_room(user)
    status, resp = user.request("GET", f"{V3}/rooms/{quote(room_id)}/joined_members")
    assert status == 200, resp
    me = resp["joined"][user.user_id]
    assert me == {"display_name": user.user_id[1:].split(":")[0]}  # no "avatar_url": null
    assert user.request("PUT", f"{V3}/profile/{quote(user.user_id)}/avatar_url",
                        {"avatar_url": "mxc://test.local/abc"})[0] == 200
    status, resp = user.request("GET", f"{V3}/rooms/{quote(room_id)}/joined_members")
    assert resp["joined"][user.user_id]["avatar_url"] == "mxc://test.local/abc"


def test_messages_of_a_left_room_page_back_from_the_leave(server, unique):
    owner, leaver = _user(server, unique, "own"), _user(server, unique, "lv")
    room_id = create_room(owner, preset="public_chat")
    assert leaver.request("POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200
    before = [_send(owner, room_id, f"before-{i}") for i in range(3)]
    status, leave = leaver.request("POST", f"{V3}/rooms/{quote(room_id)}/leave", {})
    assert status == 200
    for i in range(12):
        _send(owner, room_id, f"after-{i}")

    status, page = leaver.request("GET", f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit=4")
    assert status == 200, page
    chunk = page["chunk"]
    assert chunk[0]["type"] == "m.room.member" and chunk[0]["state_key"] == leaver.user_id
    assert chunk[0]["content"]["membership"] == "leave"
    assert [e["event_id"] for e in chunk[1:]] == before[::-1]
    # A token from after the leave (a client's stored sync position) is clamped too.
    status, sync = owner.request("GET", f"{V3}/sync?timeout=0")
    status, page = leaver.request(
        "GET", f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit=1&from={quote(sync['next_batch'])}")
    assert status == 200 and page["chunk"][0]["content"]["membership"] == "leave", page
    assert not any(json.dumps(e).count("after-") for e in page["chunk"])


def test_transaction_ids_are_bounded(server, unique):
    A, B = _user(server, unique, "a"), _user(server, unique, "b")
    room_id = joined_room(A, B, invite=False, preset="public_chat")
    status, body = A.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{'t' * 300}",
                             {"msgtype": "m.text", "body": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, _ = A.request("PUT", f"{V3}/sendToDevice/m.test/{'t' * 300}", {"messages": {}})
    assert status == 400
    # and the room still works for everyone
    assert B.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/ok", {"msgtype": "m.text", "body": "y"})[0] == 200
