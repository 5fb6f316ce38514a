"""Push-rule evaluation as pure logic: glob matching against a brute-force reference,
dotted-path escaping, every condition kind, the token buckets, and the spec's examples."""
from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from client_api.ratelimit import Buckets
from homeserver.push.patterns import MISSING, glob_matches, lookup, split_path
from homeserver.push.rules import OWNER, CompiledRules, EventFacts, evaluate, outcome_for
from homeserver.push_rules import build_ruleset, default_rules
from storage.push_rules import StoredRule

ALPHABET = "abAB_-. *?x1"
WORD = re.compile(r"[A-Za-z0-9_]")


def _ref_glob(pattern: str, value: str) -> bool:
    """Whole-value glob match by dynamic programming, case-insensitively (the reference)."""
    p, v = pattern.lower(), value.lower()
    dp = [[False] * (len(v) + 1) for _ in range(len(p) + 1)]
    dp[0][0] = True
    for i in range(1, len(p) + 1):
        dp[i][0] = dp[i - 1][0] and p[i - 1] == "*"
        for j in range(1, len(v) + 1):
            if p[i - 1] == "*":
                dp[i][j] = dp[i - 1][j] or dp[i][j - 1]
            else:
                dp[i][j] = dp[i - 1][j - 1] and (p[i - 1] == "?" or p[i - 1] == v[j - 1])
    return dp[len(p)][len(v)]


def _ref_words(pattern: str, value: str) -> bool:
    """Some substring starting and ending at a word boundary matches the whole glob."""
    n = len(value)
    for i in range(n + 1):
        if i > 0 and WORD.match(value[i - 1]):
            continue
        for j in range(i, n + 1):
            if j < n and WORD.match(value[j]):
                continue
            if _ref_glob(pattern, value[i:j]):
                return True
    return False


@settings(max_examples=400)
@given(st.text(ALPHABET, max_size=6), st.text(ALPHABET + "\n", max_size=10))
def test_glob_whole_value_matches_reference(pattern, value):
    assert glob_matches(pattern, value) == _ref_glob(pattern, value)


@settings(max_examples=400)
@given(st.text(ALPHABET, max_size=5), st.text(ALPHABET, max_size=9))
def test_glob_word_boundary_matches_reference(pattern, value):
    assert glob_matches(pattern, value, words=True) == _ref_words(pattern, value)


def test_glob_spec_examples():
    # event_match on content.topic with "lunc?*"
    assert glob_matches("lunc?*", "Lunch plans") and glob_matches("lunc?*", "LUNCH")
    assert not glob_matches("lunc?*", " lunch") and not glob_matches("lunc?*", "lunc")
    # content.body with "ex*ple"
    for body in ("An example event.", "exple", "An exciting triple-whammy"):
        assert glob_matches("ex*ple", body, words=True), body
    assert not glob_matches("ex*ple", "examples", words=True)
    assert glob_matches("cake", "Let them eat cake!", words=True)
    assert not glob_matches("cake", "pancakes", words=True)
    assert glob_matches("cake*lie", "the cake is a lie", words=True)


@given(st.lists(st.text("ab.\\x", max_size=4), min_size=1, max_size=4))
def test_split_path_round_trips_escaped_parts(parts):
    key = ".".join(p.replace("\\", "\\\\").replace(".", "\\.") for p in parts)
    assert split_path(key) == tuple(parts)


def test_split_path_spec_examples():
    assert split_path("content.m\\.relates_to.rel_type") == ("content", "m.relates_to", "rel_type")
    assert split_path("content.m\\.mentions.user_ids") == ("content", "m.mentions", "user_ids")
    assert split_path("content.a\\\\.b") == ("content", "a\\", "b")
    assert split_path("content.x\\y") == ("content", "xy")  # other escapes stand for the character
    assert lookup({"content": {"m.federate": True}}, split_path("content.m\\.federate")) is True
    assert lookup({"content": {"m": {"federate": True}}}, split_path("content.m\\.federate")) is MISSING


def _facts(event: dict, member_count: int = 5, sender_power: float = 0, levels=None, names=None) -> EventFacts:
    return EventFacts(event, member_count, sender_power, levels, (names or {}).get)


def _msg(**content) -> dict:
    return {"type": "m.room.message", "sender": "@s:x", "room_id": "!r:x", "event_id": "$e",
            "content": {"msgtype": "m.text", "body": "hello", **content}}


def _only(cond: dict, event: dict, user: str = "@me:x", **kw) -> bool:
    ruleset = {"override": [{"rule_id": "r", "enabled": True, "conditions": [cond], "actions": ["notify"]}]}
    outcome = evaluate(ruleset, user, _facts(event, **kw))
    return outcome is not None


def test_event_match_needs_a_string():
    event = {"type": "m.room.topic", "sender": "@s:x", "room_id": "!r", "state_key": "",
             "content": {"topic": "Lunch plans", "n": 3}}
    assert _only({"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}, event)
    assert not _only({"kind": "event_match", "key": "content.n", "pattern": "*"}, event)
    assert not _only({"kind": "event_match", "key": "content.missing", "pattern": "*"}, event)


def test_event_property_is_exact_types():
    event = {"type": "m.room.create", "sender": "@s:x", "room_id": "!r", "state_key": "",
             "content": {"m.federate": True, "n": 1, "s": "true", "z": None, "f": 1.5}}
    cond = {"kind": "event_property_is", "key": "content.m\\.federate"}
    assert _only({**cond, "value": True}, event)
    assert not _only({**cond, "value": "true"}, event)
    assert not _only({**cond, "value": 1}, event)
    assert _only({"kind": "event_property_is", "key": "content.n", "value": 1}, event)
    assert not _only({"kind": "event_property_is", "key": "content.n", "value": True}, event)
    assert _only({"kind": "event_property_is", "key": "content.z", "value": None}, event)
    assert not _only({"kind": "event_property_is", "key": "content.missing", "value": None}, event)
    assert not _only({"kind": "event_property_is", "key": "content.f", "value": 1}, event)


def test_event_property_contains():
    event = {"type": "m.room.canonical_alias", "sender": "@s:x", "room_id": "!r", "state_key": "",
             "content": {"alt_aliases": ["#somewhere:example.org", "#myroom:example.com", 1, {"a": 1}],
                         "notarray": "#myroom:example.com"}}
    cond = {"kind": "event_property_contains", "key": "content.alt_aliases"}
    assert _only({**cond, "value": "#myroom:example.com"}, event)
    assert not _only({**cond, "value": ":example.com"}, event)
    assert _only({**cond, "value": 1}, event) and not _only({**cond, "value": True}, event)
    assert not _only({"kind": "event_property_contains", "key": "content.notarray",
                      "value": "#myroom:example.com"}, event)


def test_room_member_count_operators():
    event = _msg()
    for is_, count, expected in [("2", 2, True), ("==2", 3, False), ("<3", 2, True), ("<3", 3, False),
                                 (">3", 4, True), (">=3", 3, True), ("<=10", 10, True), ("<=10", 11, False),
                                 ("nonsense", 2, False), ("=2", 2, False)]:
        assert _only({"kind": "room_member_count", "is": is_}, event, member_count=count) is expected, is_


def test_sender_notification_permission():
    cond = {"kind": "sender_notification_permission", "key": "room"}
    assert not _only(cond, _msg(), sender_power=0)
    assert _only(cond, _msg(), sender_power=50)
    assert _only(cond, _msg(), sender_power=10, levels={"room": 10})
    assert not _only(cond, _msg(), sender_power=10, levels={"room": "20"})
    assert _only(cond, _msg(), sender_power=float("inf"))  # v12 room creators


def test_contains_display_name_and_unknown_conditions():
    names = {"@me:x": "Alice B"}
    cond = {"kind": "contains_display_name"}
    assert _only(cond, _msg(body="hey alice b, lunch?"), names=names)
    assert not _only(cond, _msg(body="malice bob"), names=names)
    assert not _only(cond, _msg(body="anything"), names={})
    assert not _only({"kind": "org.example.unknown"}, _msg())


def _defaults_for(user: str, event: dict, **kw):
    return evaluate(default_rules(user), user, _facts(event, **kw))


def test_default_rules_in_spec_order():
    me = "@me:x"
    assert _defaults_for(me, _msg()).rule_id == ".m.rule.message"
    assert _defaults_for(me, _msg(), member_count=2).rule_id == ".m.rule.room_one_to_one"
    mention = _defaults_for(me, _msg(**{"m.mentions": {"user_ids": [me]}}))
    assert mention.rule_id == ".m.rule.is_user_mention" and mention.highlight and mention.notify
    assert _defaults_for(me, _msg(**{"m.mentions": {"user_ids": ["@other:x"]}})).highlight is False
    room = _msg(**{"m.mentions": {"room": True}})
    assert _defaults_for(me, room, sender_power=50).rule_id == ".m.rule.is_room_mention"
    assert _defaults_for(me, room, sender_power=0).rule_id == ".m.rule.message"
    assert not _defaults_for(me, _msg(msgtype="m.notice")).notify
    edit = _msg(**{"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    assert _defaults_for(me, edit).rule_id == ".m.rule.suppress_edits"
    reaction = {"type": "m.reaction", "sender": "@s:x", "room_id": "!r", "content": {}}
    assert not _defaults_for(me, reaction).notify
    invite = {"type": "m.room.member", "sender": "@s:x", "room_id": "!r", "state_key": me,
              "content": {"membership": "invite"}}
    assert _defaults_for(me, invite).rule_id == ".m.rule.invite_for_me"
    assert _defaults_for("@else:x", invite).rule_id == ".m.rule.member_event"
    tomb = {"type": "m.room.tombstone", "sender": "@s:x", "room_id": "!r", "state_key": "", "content": {}}
    assert _defaults_for(me, tomb).highlight
    acl = {"type": "m.room.server_acl", "sender": "@s:x", "room_id": "!r", "state_key": "", "content": {}}
    assert not _defaults_for(me, acl).notify
    enc = {"type": "m.room.encrypted", "sender": "@s:x", "room_id": "!r", "content": {}}
    assert _defaults_for(me, enc).rule_id == ".m.rule.encrypted"
    assert _defaults_for(me, enc, member_count=2).rule_id == ".m.rule.encrypted_room_one_to_one"
    call = {"type": "m.call.invite", "sender": "@s:x", "room_id": "!r", "content": {}}
    assert _defaults_for(me, call).actions[1] == {"set_tweak": "sound", "value": "ring"}
    other = {"type": "m.room.topic", "sender": "@s:x", "room_id": "!r", "state_key": "", "content": {}}
    assert _defaults_for(me, other) is None


def _stored(kind, rule_id, rule=None, enabled=None, priority=0):
    return StoredRule(kind, rule_id, rule, enabled, priority)


def test_users_own_rules_and_mutes():
    me = "@me:x"
    # Element's older mute: a room rule with dont_notify (a historical action: stripped).
    muted = build_ruleset(me, [_stored("room", "!r:x", {"actions": ["dont_notify"]})])
    assert not evaluate(muted, me, _facts(_msg())).notify
    other_room = dict(_msg(), room_id="!other:x")
    assert evaluate(muted, me, _facts(other_room)).notify
    # Element's current mute: an override rule matching the room id.
    mute2 = build_ruleset(me, [_stored("override", "!r:x", {"conditions": [
        {"kind": "event_match", "key": "room_id", "pattern": "!r:x"}], "actions": []})])
    assert not evaluate(mute2, me, _facts(_msg())).notify
    # The user's override rules come before the default mention rule: a mention stays quiet.
    assert not evaluate(mute2, me, _facts(_msg(**{"m.mentions": {"user_ids": [me]}}))).notify
    # The master rule turns everything off.
    master = build_ruleset(me, [_stored("override", ".m.rule.master", None, True)])
    assert not evaluate(master, me, _facts(_msg(**{"m.mentions": {"user_ids": [me]}}))).notify
    # Disabling a default rule falls through to the next.
    no_one = build_ruleset(me, [_stored("underride", ".m.rule.room_one_to_one", None, False)])
    assert evaluate(no_one, me, _facts(_msg(), member_count=2)).rule_id == ".m.rule.message"
    # A sender rule, and a content (keyword) rule with a sound.
    spam = build_ruleset(me, [_stored("sender", "@s:x", {"actions": []})])
    assert not evaluate(spam, me, _facts(_msg())).notify
    cake = build_ruleset(me, [_stored("content", "cake", {"pattern": "cake",
                                                          "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]})])
    assert evaluate(cake, me, _facts(_msg(body="Cake time"))).rule_id == "cake"
    assert evaluate(cake, me, _facts(_msg(body="pancakes"))).rule_id == ".m.rule.message"


def test_spec_example_beer_rule():
    me = "@me:x"
    beer = build_ruleset(me, [_stored("override", "beer", {"conditions": [
        {"kind": "event_match", "key": "content.body", "pattern": "beer"},
        {"kind": "room_member_count", "is": "<=10"}],
        "actions": ["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}]})])
    assert evaluate(beer, me, _facts(_msg(body="beer?"), member_count=10)).rule_id == "beer"
    assert evaluate(beer, me, _facts(_msg(body="beer?"), member_count=11)).rule_id == ".m.rule.message"


@settings(max_examples=200)
@given(st.sampled_from(["@a:x", "@b:x", "@c:x"]), st.lists(st.sampled_from(["@a:x", "@b:x", 1, True]), max_size=3),
       st.sampled_from(["m.room.message", "m.room.member", "m.room.encrypted"]),
       st.sampled_from(["invite", "join"]), st.integers(1, 4), st.booleans())
def test_shared_template_agrees_with_per_user_rules(user, mentioned, etype, membership, count, room_mention):
    """A template compiled once with the owner as a placeholder gives every user exactly
    what their own ruleset gives."""
    event = {"type": etype, "sender": "@s:x", "room_id": "!r", "state_key": "@b:x",
             "content": {"membership": membership, "body": "x",
                         "m.mentions": {"user_ids": mentioned, "room": room_mention}}}
    facts = _facts(event, member_count=count, sender_power=50)
    template = CompiledRules(default_rules(OWNER))
    shared = outcome_for(template.plan(facts), facts, user)
    own = evaluate(default_rules(user), user, _facts(event, member_count=count, sender_power=50))
    assert (shared.rule_id if shared else None) == (own.rule_id if own else None)


def test_buckets_refill_and_retry_after():
    now = [0.0]
    b = Buckets(lambda: now[0])
    assert all(b.take("m", "u", 0.5, 3) == 0 for _ in range(3))
    wait = b.take("m", "u", 0.5, 3)
    assert abs(wait - 2.0) < 1e-9  # one action drains in 2 s at 0.5/s
    assert b.take("m", "other", 0.5, 3) == 0  # keys are separate
    now[0] = 2.0
    assert b.take("m", "u", 0.5, 3) == 0
    assert b.wait_needed("m", "u", 0.5, 3) > 0
    now[0] = 100.0
    assert b.wait_needed("m", "u", 0.5, 3) == 0
