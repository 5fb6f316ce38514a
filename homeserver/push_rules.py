"""Push rules: the spec's server-default rules, merged with what the user changed (their own
rules, and the enabled flag or actions of default rules), and the changes themselves.

Evaluation order in the merged ruleset: `.m.rule.master` first, then the user's rules of a
kind, then the remaining server-default rules of that kind (spec, "Predefined Rules").
The default set follows the current spec, which no longer has the legacy body-matching
mention rules (`.m.rule.contains_display_name`, `.m.rule.contains_user_name`,
`.m.rule.roomnotif`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from homeserver.async_utils import KeyedLock
from homeserver.errors import invalid_param, not_found
from homeserver.ids import is_valid_room_id, is_valid_user_id
from storage import push_rules as store
from storage.database import Cursor

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# In the order the spec says they are checked.
KINDS = ("override", "content", "room", "sender", "underride")
# Older specs' actions that homeservers must ignore (strip).
HISTORICAL_ACTIONS = ("dont_notify", "coalesce")


def _default_override(user_id: str) -> list[dict]:
    return [
        {
            "rule_id": ".m.rule.master",
            "default": True,
            "enabled": False,
            "conditions": [],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.suppress_notices",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"},
            ],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.invite_for_me",
            "default": True,
            "enabled": True,
            "conditions": [
                {"key": "type", "kind": "event_match", "pattern": "m.room.member"},
                {"key": "content.membership", "kind": "event_match", "pattern": "invite"},
                {"key": "state_key", "kind": "event_match", "pattern": user_id},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.member_event",
            "default": True,
            "enabled": True,
            "conditions": [
                {"key": "type", "kind": "event_match", "pattern": "m.room.member"},
            ],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.is_user_mention",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids",
                 "value": user_id},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"},
                        {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.is_room_mention",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            "actions": ["notify", {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.tombstone",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
                {"kind": "event_match", "key": "state_key", "pattern": ""},
            ],
            "actions": ["notify", {"set_tweak": "highlight"}],
        },
        {
            "rule_id": ".m.rule.reaction",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.reaction"},
            ],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.room.server_acl",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
                {"kind": "event_match", "key": "state_key", "pattern": ""},
            ],
            "actions": [],
        },
        {
            "rule_id": ".m.rule.suppress_edits",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type",
                 "value": "m.replace"},
            ],
            "actions": [],
        },
    ]


def _default_underride() -> list[dict]:
    return [
        {
            "rule_id": ".m.rule.call",
            "default": True,
            "enabled": True,
            "conditions": [
                {"key": "type", "kind": "event_match", "pattern": "m.call.invite"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "ring"}],
        },
        {
            "rule_id": ".m.rule.encrypted_room_one_to_one",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "room_member_count", "is": "2"},
                {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.room_one_to_one",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "room_member_count", "is": "2"},
                {"kind": "event_match", "key": "type", "pattern": "m.room.message"},
            ],
            "actions": ["notify", {"set_tweak": "sound", "value": "default"}],
        },
        {
            "rule_id": ".m.rule.message",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.message"},
            ],
            "actions": ["notify"],
        },
        {
            "rule_id": ".m.rule.encrypted",
            "default": True,
            "enabled": True,
            "conditions": [
                {"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"},
            ],
            "actions": ["notify"],
        },
    ]


def default_rules(user_id: str) -> dict[str, list[dict]]:
    """The server-default rules for `user_id`, by kind, each list in spec order."""
    return {"override": _default_override(user_id), "content": [], "room": [], "sender": [],
            "underride": _default_underride()}


DEFAULT_RULE_IDS: dict[str, frozenset[str]] = {
    kind: frozenset(rule["rule_id"] for rule in rules)
    for kind, rules in default_rules("@x:x").items()
}


def is_default_rule(kind: str, rule_id: str) -> bool:
    return rule_id in DEFAULT_RULE_IDS.get(kind, ())


# ---------------------------------------------------------------------------------------
# Merging


def _user_rule_json(kind: str, stored: store.StoredRule) -> dict:
    body = stored.rule or {}
    rule: dict[str, Any] = {
        "rule_id": stored.rule_id,
        "default": False,
        "enabled": True if stored.enabled is None else stored.enabled,
        "actions": list(body.get("actions", [])),
    }
    if kind in ("override", "underride"):
        rule["conditions"] = list(body.get("conditions", []))
    elif kind == "content":
        rule["pattern"] = body.get("pattern", "")
    return rule


def build_ruleset(user_id: str, stored_rules: list[store.StoredRule]) -> dict[str, list[dict]]:
    """The user's whole global ruleset (every kind present, each in evaluation order)."""
    defaults = default_rules(user_id)
    changed: dict[tuple[str, str], store.StoredRule] = {}
    user: dict[str, list[store.StoredRule]] = {kind: [] for kind in KINDS}
    for stored in stored_rules:
        if stored.kind not in user:
            continue
        if stored.rule_id.startswith("."):
            changed[(stored.kind, stored.rule_id)] = stored
        else:
            user[stored.kind].append(stored)

    ruleset: dict[str, list[dict]] = {}
    for kind in KINDS:
        server_rules = []
        for rule in defaults[kind]:
            change = changed.get((kind, rule["rule_id"]))
            if change is not None:
                if change.enabled is not None:
                    rule["enabled"] = change.enabled
                if change.rule is not None and "actions" in change.rule:
                    rule["actions"] = list(change.rule["actions"])
            server_rules.append(rule)
        user_rules = [_user_rule_json(kind, s)
                      for s in sorted(user[kind], key=lambda s: (-s.priority, s.rule_id))]
        if kind == "override":
            master = [r for r in server_rules if r["rule_id"] == ".m.rule.master"]
            rest = [r for r in server_rules if r["rule_id"] != ".m.rule.master"]
            ruleset[kind] = master + user_rules + rest
        else:
            ruleset[kind] = user_rules + server_rules
    return ruleset


def find_rule(ruleset: dict[str, list[dict]], kind: str, rule_id: str) -> dict:
    check_kind(kind)
    for rule in ruleset.get(kind, []):
        if rule["rule_id"] == rule_id:
            return rule
    raise not_found("push rule not found")


# ---------------------------------------------------------------------------------------
# Validation of client input


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise invalid_param(f"unknown push rule kind {kind!r}")


def validate_actions(actions: Any) -> list:
    """The actions as stored: historical actions stripped, anything malformed refused."""
    if not isinstance(actions, list):
        raise invalid_param("actions must be an array")
    cleaned = []
    for action in actions:
        if isinstance(action, str):
            if action in HISTORICAL_ACTIONS:
                continue
            if action != "notify":
                raise invalid_param(f"unknown push rule action {action!r}")
        elif isinstance(action, dict):
            if not isinstance(action.get("set_tweak"), str) or not action["set_tweak"]:
                raise invalid_param("an action object must have a set_tweak string")
        else:
            raise invalid_param("each action must be a string or an object")
        cleaned.append(action)
    return cleaned


def _validate_conditions(conditions: Any) -> list:
    if not isinstance(conditions, list):
        raise invalid_param("conditions must be an array")
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("kind"), str):
            raise invalid_param("each condition must be an object with a string kind")
        for name in ("key", "pattern", "is"):
            if name in condition and not isinstance(condition[name], str):
                raise invalid_param(f"condition {name} must be a string")
        if "value" in condition:
            value = condition["value"]
            if isinstance(value, (dict, list, float)):
                raise invalid_param("condition value must be a string, integer, boolean or null")
    return conditions


def validate_new_rule(kind: str, rule_id: str, body: dict) -> dict:
    """The stored body of a user rule created or replaced through PUT."""
    check_kind(kind)
    if rule_id.startswith("."):
        raise invalid_param("rule ids starting with '.' are reserved for server-default rules")
    if "/" in rule_id or "\\" in rule_id:
        raise invalid_param("rule ids may not contain slashes or backslashes")
    if kind == "room" and not is_valid_room_id(rule_id):
        raise invalid_param("the rule id of a room rule must be a room id")
    if kind == "sender" and not is_valid_user_id(rule_id):
        raise invalid_param("the rule id of a sender rule must be a user id")
    if "actions" not in body:
        raise invalid_param("actions are required")
    rule: dict[str, Any] = {"actions": validate_actions(body["actions"])}
    if kind in ("override", "underride"):
        rule["conditions"] = _validate_conditions(body.get("conditions", []))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise invalid_param("content rules need a pattern string")
        rule["pattern"] = pattern
    return rule


# ---------------------------------------------------------------------------------------
# Changes (each runs inside the transaction of `change_rules`)


def put_user_rule(cur: Cursor, user_id: str, kind: str, rule_id: str, rule: dict,
                  before: str | None, after: str | None) -> None:
    """Creates or replaces a user rule. A new rule is enabled and, without before/after,
    the most important user rule of its kind; a replaced one keeps its place and flag."""
    rows = [r for r in store.list_rules(cur, user_id) if r.kind == kind and not r.rule_id.startswith(".")]
    order = [r.rule_id for r in sorted(rows, key=lambda r: (-r.priority, r.rule_id))]
    existing = next((r for r in rows if r.rule_id == rule_id), None)

    for name, anchor in (("before", before), ("after", after)):
        if anchor is None:
            continue
        if anchor.startswith("."):
            raise invalid_param(f"cannot place a rule relative to the server-default rule {anchor}")
        if anchor == rule_id:
            raise invalid_param(f"{name} cannot name the rule itself")
        if anchor not in order:
            raise invalid_param(f"{name} rule not found: {anchor}")

    if existing is None or before is not None or after is not None:
        if rule_id in order:
            order.remove(rule_id)
        if before is not None:  # before wins when both are given
            order.insert(order.index(before), rule_id)
        elif after is not None:
            order.insert(order.index(after) + 1, rule_id)
        else:
            order.insert(0, rule_id)

    enabled = True if existing is None or existing.enabled is None else existing.enabled
    store.put_rule(cur, user_id, kind, rule_id, rule, enabled, 0)
    store.set_priorities(cur, user_id, kind, order)


def _require_rule(cur: Cursor, user_id: str, kind: str, rule_id: str) -> store.StoredRule | None:
    """The stored row of an existing rule (None for an untouched default); 404 otherwise."""
    check_kind(kind)
    row = store.get_rule(cur, user_id, kind, rule_id)
    if is_default_rule(kind, rule_id):
        return row
    if row is None or rule_id.startswith("."):
        raise not_found("push rule not found")
    return row


def delete_user_rule(cur: Cursor, user_id: str, kind: str, rule_id: str) -> None:
    check_kind(kind)
    if is_default_rule(kind, rule_id):
        raise invalid_param("server-default rules cannot be deleted; disable them instead")
    if rule_id.startswith(".") or not store.delete_rule(cur, user_id, kind, rule_id):
        raise not_found("push rule not found")


def set_rule_enabled(cur: Cursor, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
    _require_rule(cur, user_id, kind, rule_id)
    store.set_enabled(cur, user_id, kind, rule_id, enabled)


def set_rule_actions(cur: Cursor, user_id: str, kind: str, rule_id: str, actions: list) -> None:
    row = _require_rule(cur, user_id, kind, rule_id)
    rule = dict(row.rule) if row is not None and row.rule is not None else {}
    rule["actions"] = actions
    store.set_rule_json(cur, user_id, kind, rule_id, rule)


# ---------------------------------------------------------------------------------------
# Running changes and reading


# One change at a time per user, so the m.push_rules account data published after each
# change arrives in commit order.
_user_locks = KeyedLock()


async def get_ruleset(hs: "HomeServer", user_id: str) -> dict[str, list[dict]]:
    rows = await hs.db.run(store.list_rules, user_id)
    return build_ruleset(user_id, rows)


async def change_rules(hs: "HomeServer", user_id: str,
                       mutate: Callable[[Cursor], None]) -> dict[str, list[dict]]:
    """Runs `mutate(cursor)` in a transaction, then tells the user's clients (through
    account data of type m.push_rules) the whole new ruleset, which it returns. A
    MatrixError raised by `mutate` rolls the change back."""
    async def work() -> dict[str, list[dict]]:
        def txn(cur: Cursor) -> dict[str, list[dict]]:
            store.lock_user(cur, user_id)
            mutate(cur)
            return build_ruleset(user_id, store.list_rules(cur, user_id))

        ruleset = await hs.db.run(txn)
        hs.push.rules_changed(user_id)  # the compiled rules evaluated for new events
        if hs.sync is not None:
            await hs.sync.account_data.put(user_id, "", "m.push_rules", {"global": ruleset})
        return ruleset

    return await _user_locks.run(user_id, work)

