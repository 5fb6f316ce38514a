"""Synapse's admin API for event reports: list (paging, filters), one report with the
reported event, delete. Tenant admins see the reports about their tenant's rooms."""
from __future__ import annotations

import orjson

from client_api.admin_auth import origin_of, query_count, query_dir, require_admin
from client_api.http import Req, Router
from homeserver.errors import MatrixError, not_found
from storage import admin_reports as reports_store

V1 = "/_synapse/admin/v1"


def _public(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "tenant_id"}


async def list_reports(req: Req):
    scope = await require_admin(req)
    start = query_count(req, "from", 0)
    limit = query_count(req, "limit", 100)
    reports, total = await req.hs.db.run(
        reports_store.list_event_reports, start, limit, query_dir(req, "b"), req.query("user_id"),
        req.query("room_id"), req.query("event_sender_user_id"), scope.tenant, not scope.server_admin)
    result: dict = {"event_reports": [_public(r) for r in reports], "total": total}
    if start + limit < total:
        result["next_token"] = start + len(reports)
    return result


async def _report(req: Req, report_id: str) -> dict:
    scope = await require_admin(req)
    if not report_id.isascii() or not report_id.isdigit() or len(report_id) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "The report_id parameter must be a string representing a positive integer.")
    report = await req.hs.db.run(reports_store.get_event_report, int(report_id))
    if report is None or not scope.covers(report["tenant_id"]):
        raise not_found("Event report not found")
    return report


async def get_report(req: Req, report_id: str):
    report = _public(await _report(req, report_id))
    if report["event_json"] is not None:
        report["event_json"] = orjson.loads(report["event_json"])
    return report


async def delete_report(req: Req, report_id: str):
    report = await _report(req, report_id)
    await req.hs.db.run(reports_store.delete_event_report, report["id"])
    await req.hs.audit.record("event_report.delete", origin_of(req), target_room=report["room_id"],
                              tenant_id=report["tenant_id"], report_id=report["id"])
    return {}


def register(router: Router) -> None:
    router.add("GET", V1 + "/event_reports", list_reports)
    router.add("GET", V1 + "/event_reports/{report_id}", get_report)
    router.add("DELETE", V1 + "/event_reports/{report_id}", delete_report)
