"""The push rules a user changed: their own rules, and the enabled flag or actions they set
on server-default rules (rule ids starting with '.'). Plain cursor functions.

Within a kind, a higher `priority` means a more important user rule."""
from __future__ import annotations

import json
from typing import NamedTuple

from storage.database import Cursor


class StoredRule(NamedTuple):
    kind: str
    rule_id: str
    rule: dict | None       # a user rule's body, or a server-default rule's changed actions
    enabled: bool | None    # None: the rule's own default
    priority: int


def lock_user(cur: Cursor, user_id: str) -> None:
    """Serialises changes to one user's rules until the transaction ends."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("push_rules|" + user_id,))


def list_rules(cur: Cursor, user_id: str) -> list[StoredRule]:
    cur.execute("SELECT kind, rule_id, rule_json, enabled, priority FROM push_rules"
                " WHERE user_id = %s ORDER BY kind, priority DESC, rule_id", (user_id,))
    return [StoredRule(kind, rule_id, json.loads(rule_json) if rule_json is not None else None,
                       enabled, priority)
            for kind, rule_id, rule_json, enabled, priority in cur.fetchall()]


def get_rule(cur: Cursor, user_id: str, kind: str, rule_id: str) -> StoredRule | None:
    cur.execute("SELECT kind, rule_id, rule_json, enabled, priority FROM push_rules"
                " WHERE user_id = %s AND kind = %s AND rule_id = %s", (user_id, kind, rule_id))
    row = cur.fetchone()
    if row is None:
        return None
    return StoredRule(row[0], row[1], json.loads(row[2]) if row[2] is not None else None,
                      row[3], row[4])


def put_rule(cur: Cursor, user_id: str, kind: str, rule_id: str, rule: dict,
             enabled: bool, priority: int) -> None:
    cur.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, rule_json, enabled, priority)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET rule_json = EXCLUDED.rule_json,"
        " enabled = EXCLUDED.enabled, priority = EXCLUDED.priority",
        (user_id, kind, rule_id, json.dumps(rule), enabled, priority))


def set_enabled(cur: Cursor, user_id: str, kind: str, rule_id: str, enabled: bool) -> None:
    cur.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, rule_json, enabled)"
        " VALUES (%s, %s, %s, NULL, %s)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = EXCLUDED.enabled",
        (user_id, kind, rule_id, enabled))


def set_rule_json(cur: Cursor, user_id: str, kind: str, rule_id: str, rule: dict) -> None:
    cur.execute(
        "INSERT INTO push_rules (user_id, kind, rule_id, rule_json, enabled)"
        " VALUES (%s, %s, %s, %s, NULL)"
        " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET rule_json = EXCLUDED.rule_json",
        (user_id, kind, rule_id, json.dumps(rule)))


def set_priorities(cur: Cursor, user_id: str, kind: str, ordered_rule_ids: list[str]) -> None:
    """Renumbers the given rules so the first is the most important."""
    count = len(ordered_rule_ids)
    for index, rule_id in enumerate(ordered_rule_ids):
        cur.execute("UPDATE push_rules SET priority = %s"
                    " WHERE user_id = %s AND kind = %s AND rule_id = %s",
                    (count - index, user_id, kind, rule_id))


def delete_rule(cur: Cursor, user_id: str, kind: str, rule_id: str) -> bool:
    cur.execute("DELETE FROM push_rules WHERE user_id = %s AND kind = %s AND rule_id = %s",
                (user_id, kind, rule_id))
    return cur.rowcount > 0
