"""Each user's compiled push rules, in memory: loaded in bulk for the members of a room
the first time they are needed, and dropped when the user changes a rule. Users whose
stored changes are identical (most users have none) share one compiled template."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

from homeserver.push.rules import OWNER, CompiledRules
from homeserver.push_rules import build_ruleset
from storage import push as push_store
from storage.push_rules import StoredRule

if TYPE_CHECKING:
    from storage.database import Database


class RulesetCache:
    def __init__(self, db: "Database") -> None:
        self._db = db
        self._templates: dict[tuple, CompiledRules] = {}
        self._of_user: dict[str, CompiledRules] = {}
        # Bumped when a user's rules change, so a load that read the old rules is not kept.
        self._generation: dict[str, int] = {}
        self.default = self._template(())

    def _template(self, key: tuple) -> CompiledRules:
        compiled = self._templates.get(key)
        if compiled is None:
            stored = [StoredRule(kind, rule_id, json.loads(rule_json) if rule_json is not None else None,
                                 enabled, priority)
                      for kind, rule_id, rule_json, enabled, priority in key]
            compiled = self._templates[key] = CompiledRules(build_ruleset(OWNER, stored))
        return compiled

    def peek(self, user_id: str) -> CompiledRules | None:
        return self._of_user.get(user_id)

    def missing(self, user_ids: Iterable[str]) -> list[str]:
        of_user = self._of_user
        return [u for u in user_ids if u not in of_user]

    async def ensure(self, user_ids: Iterable[str]) -> None:
        """Loads the rules of those not in memory yet, in one query."""
        missing = self.missing(set(user_ids))
        if not missing:
            return
        generations = {u: self._generation.get(u, 0) for u in missing}
        stored = await self._db.run(push_store.stored_rules_of, missing)
        for user_id in missing:
            if self._generation.get(user_id, 0) != generations[user_id] or user_id in self._of_user:
                continue  # changed while we read: the next ensure loads it again
            self._of_user[user_id] = self._template(tuple(stored.get(user_id, ())))

    def invalidate(self, user_id: str) -> None:
        self._of_user.pop(user_id, None)
        self._generation[user_id] = self._generation.get(user_id, 0) + 1
        # Templates no user refers to any more are dropped (a user's own rules are often
        # unique to them); the shared default stays.
        live = {id(c) for c in self._of_user.values()} | {id(self.default)}
        for key in [k for k, c in self._templates.items() if id(c) not in live]:
            del self._templates[key]
