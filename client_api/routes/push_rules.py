"""Push rules: read the ruleset, create/replace/delete user rules, and change the enabled
flag or actions of any rule. Every change is also sent to the user's clients as
account data of type m.push_rules."""
from __future__ import annotations

from typing import Any, Callable

from client_api.http import Req, Router
from homeserver import push_rules
from homeserver.errors import MatrixError, invalid_param


async def get_all(req: Req):
    return {"global": await push_rules.get_ruleset(req.hs, req.user_id)}


async def get_global(req: Req):
    return await push_rules.get_ruleset(req.hs, req.user_id)


async def get_rule(req: Req, kind: str, rule_id: str):
    push_rules.check_kind(kind)
    ruleset = await push_rules.get_ruleset(req.hs, req.user_id)
    return push_rules.find_rule(ruleset, kind, rule_id)


async def _change(req: Req, change: Callable[..., Any], kind: str, rule_id: str, *args: Any) -> dict:
    """`change(cur, user_id, kind, rule_id, *args)` applied to the requester's rules
    (push_rules.change_rules also tells their clients)."""
    user_id = req.user_id
    await push_rules.change_rules(req.hs, user_id, lambda cur: change(cur, user_id, kind, rule_id, *args))
    return {}


async def put_rule(req: Req, kind: str, rule_id: str):
    rule = push_rules.validate_new_rule(kind, rule_id, req.json())
    before, after = req.query("before"), req.query("after")
    return await _change(req, push_rules.put_user_rule, kind, rule_id, rule, before, after)


async def delete_rule(req: Req, kind: str, rule_id: str):
    push_rules.check_kind(kind)
    return await _change(req, push_rules.delete_user_rule, kind, rule_id)


async def get_enabled(req: Req, kind: str, rule_id: str):
    rule = await get_rule(req, kind, rule_id)
    return {"enabled": rule["enabled"]}


async def put_enabled(req: Req, kind: str, rule_id: str):
    push_rules.check_kind(kind)
    enabled = req.json().get("enabled")
    if not isinstance(enabled, bool):
        raise invalid_param("enabled must be a boolean")
    return await _change(req, push_rules.set_rule_enabled, kind, rule_id, enabled)


async def get_actions(req: Req, kind: str, rule_id: str):
    rule = await get_rule(req, kind, rule_id)
    return {"actions": rule["actions"]}


async def put_actions(req: Req, kind: str, rule_id: str):
    push_rules.check_kind(kind)
    body = req.json()
    if "actions" not in body:
        raise invalid_param("actions are required")
    actions = push_rules.validate_actions(body["actions"])
    return await _change(req, push_rules.set_rule_actions, kind, rule_id, actions)


async def malformed_path(req: Req):
    raise MatrixError(400, "M_UNRECOGNIZED", "push rule paths are /pushrules/global/<kind>/<rule id>"
                      "[/enabled|/actions]")


def register(router: Router) -> None:
    # matrix-js-sdk asks for "/pushrules/" with the slash; accept both spellings.
    router.client("GET", "/pushrules/?", get_all)
    router.client("GET", "/pushrules/global/?", get_global)
    rule = "/pushrules/global/{kind}/{rule_id}"
    router.client("GET", rule, get_rule)
    router.client("PUT", rule, put_rule)
    router.client("DELETE", rule, delete_rule)
    router.client("GET", rule + "/enabled", get_enabled)
    router.client("PUT", rule + "/enabled", put_enabled)
    router.client("GET", rule + "/actions", get_actions)
    router.client("PUT", rule + "/actions", put_actions)
    # Anything else under /pushrules is a malformed rule path (no or an unknown scope, an
    # empty rule id, an unknown attribute): 400 M_UNRECOGNIZED, as Synapse answers.
    for method in ("GET", "PUT", "DELETE"):
        router.client(method, "/pushrules/.*", malformed_path)
