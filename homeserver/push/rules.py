"""Push-rule evaluation: a user's ruleset compiled once, then walked for each event.

Rulesets are compiled as templates in which the owner's user id is a placeholder, so
every user whose stored changes are identical (most users change nothing) shares one
compiled template. For one event, a template is walked once (`EventFacts.plan`): the
conditions that do not depend on the owner are answered once per event and shared by
every template; what is left is, per rule, the few owner-dependent conditions (is this
user mentioned, is this invite for them, does the body contain their display name). A
member's actions are then the first rule whose owner-dependent conditions hold, usually
after one or two set look-ups."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import orjson

from homeserver.push_rules import HISTORICAL_ACTIONS, KINDS
from homeserver.push.patterns import MISSING, glob_matches, lookup, split_path

# Stands for the ruleset's owner inside a compiled template; no user id can contain it.
OWNER = "\uffff@owner\uffff"
DEFAULT_NOTIFICATION_LEVEL = 50
_MEMBER_COUNT = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the first matching rule says to do for one member."""
    rule_id: str
    actions: tuple
    actions_json: str
    notify: bool
    highlight: bool


def make_outcome(rule_id: str, actions: list) -> Outcome:
    cleaned = [a for a in actions if a not in HISTORICAL_ACTIONS]
    notify = "notify" in cleaned
    highlight = any(isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True) is not False
                    for a in cleaned)
    return Outcome(rule_id, tuple(cleaned), orjson.dumps(cleaned).decode(), notify, highlight)


class EventFacts:
    """One event as the conditions see it. Answers that do not depend on the member are
    memoised here and shared by every member and every template."""
    __slots__ = ("event", "member_count", "sender_power", "notification_levels", "display_name_of",
                 "_values", "memo", "plans")

    def __init__(self, event: dict, member_count: int, sender_power: int,
                 notification_levels: Any, display_name_of: Callable[[str], str | None]) -> None:
        self.event = event
        self.member_count = member_count
        self.sender_power = sender_power
        self.notification_levels = notification_levels if isinstance(notification_levels, dict) else {}
        self.display_name_of = display_name_of
        self._values: dict[tuple, Any] = {}
        self.memo: dict[tuple, bool] = {}
        self.plans: dict[int, list] = {}

    def value(self, path: tuple[str, ...]) -> Any:
        v = self._values.get(path, self)
        if v is self:
            v = self._values[path] = lookup(self.event, path)
        return v

    def notification_level(self, key: str) -> int:
        level = self.notification_levels.get(key, DEFAULT_NOTIFICATION_LEVEL)
        if isinstance(level, bool):
            return DEFAULT_NOTIFICATION_LEVEL
        if isinstance(level, str):  # older room versions allow numeric strings
            try:
                return int(level.strip())
            except ValueError:
                return DEFAULT_NOTIFICATION_LEVEL
        return level if isinstance(level, int) else DEFAULT_NOTIFICATION_LEVEL


def _scalar(value: Any) -> tuple | None:
    """A canonical-JSON scalar tagged with its type (so true != 1), or None for anything else."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value) if -(2 ** 53) < value < 2 ** 53 else None
    if isinstance(value, str):
        return ("str", value)
    return None


# ---- conditions ------------------------------------------------------------------------
# Each has `owner_dependent`; owner-independent ones have `memo_key` and `test(facts)`,
# owner-dependent ones `test_owner(facts, user_id)`.

class _Never:
    owner_dependent = False
    memo_key = ("never",)

    def test(self, facts: EventFacts) -> bool:
        return False


class _EventMatch:
    __slots__ = ("path", "pattern", "words", "owner_dependent", "memo_key")

    def __init__(self, key: str, pattern: str) -> None:
        self.path = split_path(key)
        self.pattern = pattern
        self.words = self.path == ("content", "body")
        self.owner_dependent = OWNER in pattern
        self.memo_key = ("event_match", self.path, pattern)

    def test(self, facts: EventFacts) -> bool:
        value = facts.value(self.path)
        return isinstance(value, str) and glob_matches(self.pattern, value, self.words)

    def test_owner(self, facts: EventFacts, user_id: str) -> bool:
        value = facts.value(self.path)
        return isinstance(value, str) and glob_matches(self.pattern.replace(OWNER, user_id), value, self.words)


class _PropertyIs:
    __slots__ = ("path", "value", "owner_dependent", "memo_key")

    def __init__(self, key: str, value: Any) -> None:
        self.path = split_path(key)
        self.value = _scalar(value)
        self.owner_dependent = False
        self.memo_key = ("event_property_is", self.path, self.value)

    def test(self, facts: EventFacts) -> bool:
        value = facts.value(self.path)
        return self.value is not None and value is not MISSING and _scalar(value) == self.value


class _PropertyContains:
    __slots__ = ("path", "value", "owner_dependent", "memo_key")

    def __init__(self, key: str, value: Any) -> None:
        self.path = split_path(key)
        self.owner_dependent = value == OWNER
        self.value = _scalar(value)
        self.memo_key = ("event_property_contains", self.path, self.value)

    def _members(self, facts: EventFacts) -> frozenset:
        key = ("array", self.path)
        found = facts._values.get(key)
        if found is None:
            array = facts.value(self.path)
            found = frozenset(s for s in map(_scalar, array) if s is not None) \
                if isinstance(array, list) else frozenset()
            facts._values[key] = found
        return found

    def test(self, facts: EventFacts) -> bool:
        return self.value is not None and self.value in self._members(facts)

    def test_owner(self, facts: EventFacts, user_id: str) -> bool:
        return ("str", user_id) in self._members(facts)


@lru_cache(maxsize=4096)
def _display_name_regex(name: str) -> re.Pattern:
    """The display name as literal text between word boundaries, case-insensitively."""
    return re.compile(f"(?:^|(?<=[^A-Za-z0-9_])){re.escape(name)}(?:$|(?=[^A-Za-z0-9_]))", re.IGNORECASE)


class _ContainsDisplayName:
    """Deprecated since v1.17 (no default rule uses it), still honoured in users' rules."""
    owner_dependent = True
    memo_key = ("contains_display_name",)

    def test_owner(self, facts: EventFacts, user_id: str) -> bool:
        body = facts.value(("content", "body"))
        if not isinstance(body, str):
            return False
        name = facts.display_name_of(user_id)
        return bool(name) and _display_name_regex(name).search(body) is not None


class _MemberCount:
    __slots__ = ("op", "number", "owner_dependent", "memo_key")

    def __init__(self, is_: str) -> None:
        m = _MEMBER_COUNT.match(is_.strip())
        self.op, self.number = (m.group(1) or "==", int(m.group(2))) if m else (None, 0)
        self.owner_dependent = False
        self.memo_key = ("room_member_count", self.op, self.number)

    def test(self, facts: EventFacts) -> bool:
        n, op = facts.member_count, self.op
        if op == "==":
            return n == self.number
        if op == "<":
            return n < self.number
        if op == ">":
            return n > self.number
        if op == "<=":
            return n <= self.number
        if op == ">=":
            return n >= self.number
        return False  # an `is` that does not parse never matches


class _SenderPermission:
    __slots__ = ("key", "owner_dependent", "memo_key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.owner_dependent = False
        self.memo_key = ("sender_notification_permission", key)

    def test(self, facts: EventFacts) -> bool:
        return facts.sender_power >= facts.notification_level(self.key)


def compile_condition(cond: Any):
    """An unrecognised or malformed condition never matches (the spec: it disables its rule)."""
    if not isinstance(cond, dict):
        return _Never()
    kind, key = cond.get("kind"), cond.get("key")
    if kind == "event_match" and isinstance(key, str) and isinstance(cond.get("pattern"), str):
        return _EventMatch(key, cond["pattern"])
    if kind == "event_property_is" and isinstance(key, str) and "value" in cond:
        return _PropertyIs(key, cond["value"])
    if kind == "event_property_contains" and isinstance(key, str) and "value" in cond:
        return _PropertyContains(key, cond["value"])
    if kind == "contains_display_name":
        return _ContainsDisplayName()
    if kind == "room_member_count" and isinstance(cond.get("is"), str):
        return _MemberCount(cond["is"])
    if kind == "sender_notification_permission" and isinstance(key, str):
        return _SenderPermission(key)
    return _Never()


def _conditions_of(kind: str, rule: dict) -> list:
    if kind in ("override", "underride"):
        conds = rule.get("conditions", [])
        return [compile_condition(c) for c in conds] if isinstance(conds, list) else [_Never()]
    if kind == "content":
        pattern = rule.get("pattern")
        return [_EventMatch("content.body", pattern)] if isinstance(pattern, str) else [_Never()]
    if kind == "room":
        return [_EventMatch("room_id", rule["rule_id"])]
    return [_EventMatch("sender", rule["rule_id"])]  # sender


class CompiledRules:
    """A ruleset ready to evaluate: the enabled rules in evaluation order, each with its
    conditions split into the owner-independent and the owner-dependent ones."""

    def __init__(self, ruleset: dict[str, list[dict]]) -> None:
        self.rules: list[tuple[tuple, tuple, Outcome]] = []
        for kind in KINDS:
            for rule in ruleset.get(kind, []):
                if not rule.get("enabled", True):
                    continue
                conds = _conditions_of(kind, rule)
                actions = rule.get("actions", [])
                self.rules.append((
                    tuple(c for c in conds if not c.owner_dependent),
                    tuple(c for c in conds if c.owner_dependent),
                    make_outcome(rule["rule_id"], actions if isinstance(actions, list) else [])))

    def plan(self, facts: EventFacts) -> list[tuple[tuple | None, Outcome]]:
        """For this event: the rules that can still match, in order, each with the
        owner-dependent conditions left to check (None: matches every owner, and ends
        the list)."""
        found = facts.plans.get(id(self))
        if found is not None:
            return found
        plan: list[tuple[tuple | None, Outcome]] = []
        memo = facts.memo
        for independent, dependent, outcome in self.rules:
            matched = True
            for cond in independent:
                answer = memo.get(cond.memo_key)
                if answer is None:
                    answer = memo[cond.memo_key] = cond.test(facts)
                if not answer:
                    matched = False
                    break
            if not matched:
                continue
            if not dependent:
                plan.append((None, outcome))
                break
            plan.append((dependent, outcome))
        facts.plans[id(self)] = plan
        return plan


def outcome_for(plan: list[tuple[tuple | None, Outcome]], facts: EventFacts, user_id: str) -> Outcome | None:
    """The first matching rule's outcome for `user_id`, or None when no rule matches."""
    for dependent, outcome in plan:
        if dependent is None:
            return outcome
        for cond in dependent:
            if not cond.test_owner(facts, user_id):
                break
        else:
            return outcome
    return None


def evaluate(ruleset: dict[str, list[dict]], user_id: str, facts: EventFacts) -> Outcome | None:
    """One user's outcome for one event, from a ruleset built for that user (tests and
    one-off use; the persist path shares compiled templates)."""
    return outcome_for(CompiledRules(ruleset).plan(facts), facts, user_id)
