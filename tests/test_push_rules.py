"""Push rules over raw HTTP (defaults, user rules, enabled flags, actions, ordering, errors,
the m.push_rules account data in /sync), the merge logic against the spec's own JSON, and
the fixed answers to other start-up requests clients make."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from homeserver import push_rules
from storage.push_rules import StoredRule
from tests.server_harness import Http

P = "/_matrix/client/v3/pushrules"
SPEC_PUSH_MD = Path("/work/spec/content/client-server-api/modules/push.md")

DEFAULT_OVERRIDE = [".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
                    ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.is_room_mention",
                    ".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl",
                    ".m.rule.suppress_edits"]
DEFAULT_UNDERRIDE = [".m.rule.call", ".m.rule.encrypted_room_one_to_one",
                     ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"]


def _login(http: Http, unique) -> tuple[Http, str]:
    body = http.register(unique("push"))
    return Http(http.base_url, body["access_token"]), body["user_id"]


def _ids(ruleset: dict, kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


def _global(client: Http) -> dict:
    status, body = client.request("GET", P + "/global/")
    assert status == 200, body
    return body


# ---------------------------------------------------------------------------------------
# Defaults


def test_default_ruleset_is_complete_and_well_formed(http, unique):
    client, user_id = _login(http, unique)
    status, body = client.request("GET", P + "/")
    assert status == 200, body
    ruleset = body["global"]
    assert set(ruleset) == set(push_rules.KINDS)
    assert _ids(ruleset, "override") == DEFAULT_OVERRIDE
    assert _ids(ruleset, "underride") == DEFAULT_UNDERRIDE
    assert ruleset["content"] == [] and ruleset["room"] == [] and ruleset["sender"] == []
    for kind in ("override", "underride"):
        for rule in ruleset[kind]:
            assert rule["default"] is True
            assert isinstance(rule["enabled"], bool)
            assert isinstance(rule["actions"], list)
            assert isinstance(rule["conditions"], list)
    by_id = {r["rule_id"]: r for r in ruleset["override"]}
    assert by_id[".m.rule.master"]["enabled"] is False
    assert all(r["enabled"] for r in ruleset["override"][1:] + ruleset["underride"])
    # The user's own id is substituted where the spec says so.
    assert by_id[".m.rule.invite_for_me"]["conditions"][2] == {
        "key": "state_key", "kind": "event_match", "pattern": user_id}
    assert by_id[".m.rule.is_user_mention"]["conditions"] == [{
        "kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
        "value": user_id}]


def test_trailing_slash_is_optional(http, unique):
    client, _ = _login(http, unique)
    with_slash = client.request("GET", P + "/")
    without = client.request("GET", P)
    assert with_slash[0] == without[0] == 200
    assert with_slash[1] == without[1]
    assert client.request("GET", P + "/global")[1] == with_slash[1]["global"]
    assert client.request("GET", P + "/global/")[1] == with_slash[1]["global"]


def test_needs_auth(http):
    status, body = Http(http.base_url).request("GET", P + "/")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.skipif(not SPEC_PUSH_MD.exists(), reason="spec sources not available")
def test_defaults_match_the_spec_text():
    """Every ```json definition under "Predefined Rules" equals our default, placeholders
    replaced, in the same order."""
    text = SPEC_PUSH_MD.read_text()
    section = text[text.index("#### Predefined Rules"):text.index("#### Push Rules: API")]
    override_part, underride_part = section.split("##### Default Underride Rules")
    user_id = "@alice:example.org"

    def spec_rules(part: str) -> list[dict]:
        blocks = re.findall(r"```json\n(.*?)```", part, re.S)
        return [json.loads(b.replace("[the user's Matrix ID]", user_id)) for b in blocks]

    ours = push_rules.default_rules(user_id)
    assert spec_rules(override_part) == ours["override"]
    assert spec_rules(underride_part) == ours["underride"]


def test_merge_orders_master_then_user_rules_then_defaults():
    rows = [
        StoredRule("override", "mine", {"actions": [], "conditions": []}, True, 1),
        StoredRule("override", ".m.rule.master", None, True, 0),
        StoredRule("underride", ".m.rule.message", {"actions": []}, False, 0),
        StoredRule("underride", "low", {"actions": ["notify"], "conditions": []}, True, 1),
        StoredRule("underride", "high", {"actions": ["notify"], "conditions": []}, True, 2),
        StoredRule("override", ".m.rule.gone_from_the_spec", None, False, 0),
    ]
    ruleset = push_rules.build_ruleset("@a:b", rows)
    assert _ids(ruleset, "override") == [".m.rule.master", "mine"] + DEFAULT_OVERRIDE[1:]
    assert ruleset["override"][0]["enabled"] is True
    assert _ids(ruleset, "underride") == ["high", "low"] + DEFAULT_UNDERRIDE
    message = next(r for r in ruleset["underride"] if r["rule_id"] == ".m.rule.message")
    assert message == {**message, "enabled": False, "actions": [], "default": True}


# ---------------------------------------------------------------------------------------
# User rules


def test_user_override_rules_with_before_and_after(http, unique):
    client, _ = _login(http, unique)
    cond = [{"kind": "event_match", "key": "content.body", "pattern": "cake"}]
    assert client.request("PUT", P + "/global/override/a", {"actions": ["notify"], "conditions": cond})[0] == 200
    # A new rule without before/after is the most important user rule.
    assert client.request("PUT", P + "/global/override/b", {"actions": []})[0] == 200
    assert _ids(_global(client), "override")[:3] == [".m.rule.master", "b", "a"]
    assert client.request("PUT", P + "/global/override/c?after=a", {"actions": []})[0] == 200
    assert client.request("PUT", P + "/global/override/d?before=a", {"actions": []})[0] == 200
    ruleset = _global(client)
    assert _ids(ruleset, "override") == [".m.rule.master", "b", "d", "a", "c"] + DEFAULT_OVERRIDE[1:]
    a = ruleset["override"][3]
    assert a == {"rule_id": "a", "default": False, "enabled": True, "actions": ["notify"],
                 "conditions": cond}
    # Moving an existing rule; with both, `before` decides.
    assert client.request("PUT", P + "/global/override/b?before=c&after=d", {"actions": []})[0] == 200
    assert _ids(_global(client), "override")[:5] == [".m.rule.master", "d", "a", "b", "c"]
    # Replacing without before/after keeps the place (and the enabled flag).
    assert client.request("PUT", P + "/global/override/a/enabled", {"enabled": False})[0] == 200
    assert client.request("PUT", P + "/global/override/a", {"actions": ["notify"]})[0] == 200
    ruleset = _global(client)
    assert _ids(ruleset, "override")[:5] == [".m.rule.master", "d", "a", "b", "c"]
    assert ruleset["override"][2]["enabled"] is False and ruleset["override"][2]["conditions"] == []


def test_user_underride_goes_before_server_defaults(http, unique):
    client, _ = _login(http, unique)
    assert client.request("PUT", P + "/global/underride/mine", {
        "actions": ["notify"], "conditions": [{"kind": "room_member_count", "is": ">5"}]})[0] == 200
    assert _ids(_global(client), "underride") == ["mine"] + DEFAULT_UNDERRIDE


def test_content_room_and_sender_rules(http, unique):
    client, _ = _login(http, unique)
    status, body = client.request("PUT", P + "/global/content/nocake",
                                  {"pattern": "cake*lie", "actions": ["notify", "dont_notify"]})
    assert status == 200, body
    status, rule = client.request("GET", P + "/global/content/nocake")
    assert status == 200
    # The historical dont_notify action is stripped.
    assert rule == {"rule_id": "nocake", "default": False, "enabled": True,
                    "actions": ["notify"], "pattern": "cake*lie"}
    room_id = "!room:example.org"
    assert client.request("PUT", f"{P}/global/room/{quote(room_id)}", {"actions": []})[0] == 200
    status, rule = client.request("GET", f"{P}/global/room/{quote(room_id)}")
    assert status == 200 and rule["rule_id"] == room_id and "conditions" not in rule
    sender = "@spammer:example.org"
    assert client.request("PUT", f"{P}/global/sender/{quote(sender)}", {"actions": []})[0] == 200
    ruleset = _global(client)
    assert _ids(ruleset, "room") == [room_id] and _ids(ruleset, "sender") == [sender]


def test_rules_are_per_user(http, unique):
    alice, _ = _login(http, unique)
    bob, _ = _login(http, unique)
    assert alice.request("PUT", P + "/global/override/private", {"actions": []})[0] == 200
    assert alice.request("PUT", P + "/global/override/.m.rule.master/enabled", {"enabled": True})[0] == 200
    assert bob.request("GET", P + "/global/override/private")[0] == 404
    assert bob.request("GET", P + "/global/override/.m.rule.master/enabled")[1] == {"enabled": False}


def test_delete(http, unique):
    client, _ = _login(http, unique)
    assert client.request("PUT", P + "/global/override/tmp", {"actions": []})[0] == 200
    assert client.request("DELETE", P + "/global/override/tmp") == (200, {})
    status, body = client.request("GET", P + "/global/override/tmp")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = client.request("DELETE", P + "/global/override/tmp")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = client.request("DELETE", P + "/global/override/.m.rule.master")
    assert status == 400
    assert ".m.rule.master" in _ids(_global(client), "override")


# ---------------------------------------------------------------------------------------
# enabled and actions


def test_toggle_enabled(http, unique):
    client, _ = _login(http, unique)
    rule = P + "/global/override/.m.rule.master/enabled"
    assert client.request("GET", rule) == (200, {"enabled": False})
    assert client.request("PUT", rule, {"enabled": True}) == (200, {})
    assert client.request("GET", rule) == (200, {"enabled": True})
    assert _global(client)["override"][0]["enabled"] is True
    assert client.request("PUT", rule, {"enabled": False}) == (200, {})
    assert client.request("GET", rule) == (200, {"enabled": False})
    status, body = client.request("PUT", rule, {"enabled": "yes"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # On a user rule too.
    assert client.request("PUT", P + "/global/underride/u", {"actions": []})[0] == 200
    assert client.request("PUT", P + "/global/underride/u/enabled", {"enabled": False})[0] == 200
    assert client.request("GET", P + "/global/underride/u")[1]["enabled"] is False


def test_change_actions(http, unique):
    client, _ = _login(http, unique)
    path = P + "/global/underride/.m.rule.message/actions"
    assert client.request("GET", path) == (200, {"actions": ["notify"]})
    new = ["notify", {"set_tweak": "sound", "value": "bing"}]
    assert client.request("PUT", path, {"actions": new}) == (200, {})
    assert client.request("GET", path) == (200, {"actions": new})
    # Flag and actions are independent changes.
    assert client.request("PUT", P + "/global/underride/.m.rule.message/enabled",
                          {"enabled": False})[0] == 200
    rule = client.request("GET", P + "/global/underride/.m.rule.message")[1]
    assert rule["actions"] == new and rule["enabled"] is False and rule["default"] is True
    # A user rule's conditions survive an actions change.
    cond = [{"kind": "event_match", "key": "type", "pattern": "m.sticker"}]
    assert client.request("PUT", P + "/global/override/s", {"actions": [], "conditions": cond})[0] == 200
    assert client.request("PUT", P + "/global/override/s/actions", {"actions": ["notify"]})[0] == 200
    rule = client.request("GET", P + "/global/override/s")[1]
    assert rule["actions"] == ["notify"] and rule["conditions"] == cond
    status, body = client.request("PUT", path, {"actions": "notify"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


# ---------------------------------------------------------------------------------------
# Errors


def test_not_found(http, unique):
    client, _ = _login(http, unique)
    for method, suffix, body in (("GET", "", None), ("GET", "/enabled", None),
                                 ("GET", "/actions", None),
                                 ("PUT", "/enabled", {"enabled": True}),
                                 ("PUT", "/actions", {"actions": []}),
                                 ("DELETE", "", None)):
        status, resp = client.request(method, P + "/global/override/nosuchrule" + suffix, body)
        assert status == 404 and resp["errcode"] == "M_NOT_FOUND", (method, suffix, resp)
    # A server-default id under the wrong kind does not exist either.
    status, resp = client.request("GET", P + "/global/underride/.m.rule.master")
    assert status == 404 and resp["errcode"] == "M_NOT_FOUND"
    status, resp = client.request("GET", P + "/global/override/.m.rule.nonexistent/enabled")
    assert status == 404 and resp["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("path, body", [
    ("/global/override/.mine", {"actions": []}),                 # reserved for server rules
    ("/global/override/.m.rule.master", {"actions": []}),
    ("/global/override/a%2Fb", {"actions": []}),                 # slash
    ("/global/override/a%5Cb", {"actions": []}),                 # backslash
    ("/global/nosuchkind/x", {"actions": []}),
    ("/global/override/x", {}),                                  # no actions
    ("/global/override/x", {"actions": "notify"}),
    ("/global/override/x", {"actions": ["explode"]}),
    ("/global/override/x", {"actions": [5]}),
    ("/global/override/x", {"actions": [], "conditions": {}}),
    ("/global/override/x", {"actions": [], "conditions": [{"key": "type"}]}),
    ("/global/content/x", {"actions": []}),                       # no pattern
    ("/global/room/notaroom", {"actions": []}),
    ("/global/sender/notauser", {"actions": []}),
    ("/global/override/x?before=nosuchrule", {"actions": []}),
    ("/global/override/x?after=.m.rule.suppress_notices", {"actions": []}),
])
def test_put_rejects_bad_input(http, unique, path, body):
    client, _ = _login(http, unique)
    status, resp = client.request("PUT", P + path, body)
    assert status == 400 and resp["errcode"] == "M_INVALID_PARAM", resp
    assert "x" not in _ids(_global(client), "override")


def test_put_rejects_non_json(http, unique):
    client, _ = _login(http, unique)
    status, resp = client.request("PUT", P + "/global/override/x", raw=b"{nope")
    assert status == 400 and resp["errcode"] == "M_NOT_JSON"


# ---------------------------------------------------------------------------------------
# Sync


def test_changes_reach_sync_as_account_data(http, unique):
    client, _ = _login(http, unique)
    status, first = client.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    assert client.request("PUT", P + "/global/override/.m.rule.master/enabled", {"enabled": True})[0] == 200
    status, sync = client.request(
        "GET", f"/_matrix/client/v3/sync?timeout=0&since={quote(first['next_batch'])}")
    assert status == 200, sync
    events = [e for e in sync["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert len(events) == 1
    assert events[0]["content"] == {"global": _global(client)}
    assert events[0]["content"]["global"]["override"][0]["enabled"] is True


# ---------------------------------------------------------------------------------------
# Other start-up requests


def test_turn_server_without_configuration(http, unique):
    client, _ = _login(http, unique)
    assert client.request("GET", "/_matrix/client/v3/voip/turnServer") == (200, {})
    assert Http(http.base_url).request("GET", "/_matrix/client/v3/voip/turnServer")[0] == 401


def test_third_party_lookups(http, unique):
    client, _ = _login(http, unique)
    assert client.request("GET", "/_matrix/client/v3/thirdparty/protocols") == (200, {})
    for path in ("/thirdparty/protocol/irc", "/thirdparty/location/irc",
                 "/thirdparty/user/irc", "/thirdparty/location?alias=%23a%3Ab",
                 "/thirdparty/user?userid=%40a%3Ab"):
        status, body = client.request("GET", "/_matrix/client/v3" + path)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND", (path, body)
    status, body = client.request("GET", "/_matrix/client/v3/thirdparty/location")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


@pytest.mark.parametrize("path", [
    "/_matrix/client/v1/auth_metadata",
    "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
    "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
    "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
])
def test_unsupported_probes_are_unrecognized(http, unique, path):
    client, _ = _login(http, unique)
    status, body = client.request("GET", path)
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"
