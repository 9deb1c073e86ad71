"""Reports: GET /v1/reports/stp (JSON, or CSV with Accept: text/csv)."""

from __future__ import annotations

from datetime import date

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import authenticate, json_response, query_instant, query_participant
from kevin.domain import errors as e
from kevin.domain.reports import StpQuery, csv_text

routes = web.RouteTableDef()


@routes.get("/v1/reports/stp")
async def stp_report(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    named = query_participant(request)
    if principal.is_admin:
        participant = named  # None: every participant's trades
    elif named and named != principal.participant:
        raise e.NotFound("no such participant")
    else:
        participant = principal.participant
    query = StpQuery.of(_query_date(request, "from"), _query_date(request, "to"), participant,
                        request.query.get("group_by") or None, query_instant(request))
    report = await request.app[KEVIN].reports.stp(query)
    if "text/csv" in request.headers.get("Accept", ""):
        return web.Response(text=csv_text(report), content_type="text/csv", charset="utf-8")
    return json_response(report)


def _query_date(request: web.Request, name: str) -> date:
    raw = request.query.get(name)
    try:
        if raw is None:
            raise ValueError
        return date.fromisoformat(raw) if len(raw) == 10 else _bad_date(name)
    except ValueError:
        return _bad_date(name)


def _bad_date(name: str) -> date:
    raise e.ValidationFailed(f"{name} must be a date (YYYY-MM-DD)",
                             [{"field": name, "message": "expected e.g. 2026-11-20"}])
