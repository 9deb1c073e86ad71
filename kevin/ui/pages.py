"""The workbench's pages and form actions.

Thin like the JSON API: parse, authorise from the session, call the same engine
operations (kevin.engine.service.TradeService), render. A participant's session sees and does
exactly what its key may; the admin's what the admin token may. Every form carries the
session's CSRF token, checked before anything else is read from it.
"""

from __future__ import annotations

import json
import re
import secrets
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import aiohttp_jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from kevin import jsoncodec
from kevin.api.admin import ADMIN_ACTOR
from kevin.api.app_keys import KEVIN, WORKBENCH
from kevin.api.errors import status_of
from kevin.api.http import parse_model, revoke_key
from kevin.api.session import COOKIE, CSRF_HEADER, cookie_session, csrf_matches
from kevin.domain import errors as e
from kevin.domain.keys import KEY_ID_PATTERN, REVOKED_EVERYWHERE_WITHIN_S
from kevin.domain.models import PARTICIPANT_PATTERN, TRADE_ID_PATTERN, Reason, Trade
from kevin.domain.notes import LABEL_LIMIT, NOTE_LIMIT, NoteCreate
from kevin.domain.participants import ApiKey, ApiKeyCreate, ApiKeyCreated
from kevin.domain.profiles import PROFILE_NAME_PATTERN, Profile, ProfileVersion
from kevin.domain.proposals import Decision, Proposal, ProposalKind
from kevin.domain.replay import ReplayResult
from kevin.domain.reports import GROUP_BYS, StpQuery
from kevin.domain.rules import Rules, RulesUpdate, RulesVersion
from kevin.engine.replay import Replayer
from kevin.engine.service import TradeService
from kevin.engine.workbench import COUNT_BOUND, TABS, ExceptionsQuery, Session
from kevin.feed.runtime import FEED
from kevin.ui import exports
from kevin.ui.charts import Bar, bar_chart

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

LOGIN_CSRF_COOKIE = "kevin_login_csrf"
PROPOSALS_TAB = "proposals"
TAB_LABELS = {"mismatched": "Mismatched", "unmatched": "Unmatched", "alleged": "Alleged",
              "overdue": "Overdue", PROPOSALS_TAB: "Proposals", "matched_today": "Matched today"}
# A page refreshes itself when the next cut-off among its trades passes (the overdue tab
# changes then without any write): not sooner than this, nor later (a clock changed).
CUTOFF_REFRESH_BOUNDS = (1, 3600)
AGES = {"": None, "1h": timedelta(hours=1), "4h": timedelta(hours=4),
        "1d": timedelta(days=1), "3d": timedelta(days=3)}
AGE_LABELS = {"": "any age", "1h": "older than 1 hour", "4h": "older than 4 hours",
              "1d": "older than 1 day", "3d": "older than 3 days"}
BULK_ACTIONS = {"cancel": "Cancel", "force_match": "Force-match with the named trade",
                "break": "Break the match"}
BULK_LIMIT = 500
NOTES_SHOWN = 100  # the newest of a trade's notes on its page; the API pages them all
COMMENT_LIMIT = 2000  # kevin.domain.match_models.Comment
DECISIONS: tuple[Decision, ...] = ("accept", "reject", "withdraw")
# Every kind of feed event a page listens for: a trade version's reason, a proposal's, or
# an overdue notice (a trade's cut-off passed while it was open: the overdue tab changes).
FEED_EVENTS = [*typing.get_args(Reason), "proposal", "overdue"]

_TRADE_ID = re.compile(TRADE_ID_PATTERN)
_PARTICIPANT = re.compile(PARTICIPANT_PATTERN)
_PRODUCT = re.compile(r"[A-Za-z0-9._/-]{1,32}")

# The pages load only their own files: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class LoginRequired(Exception):
    """No live session: a page sends the browser to the login form."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as pages (not JSON), and the security headers on every answer."""
    try:
        response = await handler(request)
    except LoginRequired:
        if request.method == "GET" and "HX-Request" not in request.headers:
            target = urlencode({"next": request.path_qs})
            response = see_other(f"/ui/login?{target}")
        else:
            response = _error_page(request, 401, "Your session has ended",
                                   "Log in again to continue.")
            # htmx: replace the whole page with the login form rather than a fragment.
            response.headers["HX-Redirect"] = "/ui/login"
    except e.KevinError as error:
        status = status_of(error)
        response = _error_page(request, status, _TITLES.get(status, "Not possible"),
                               error.message)
    except web.HTTPException as http:
        if http.status < 400:
            raise
        response = _error_page(request, http.status, http.reason, http.text or "")
    if not request.path.startswith("/ui/static/"):
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


_TITLES = {401: "Not logged in", 403: "Not allowed", 404: "Not found", 409: "Not possible",
           412: "Changed meanwhile", 422: "Not valid", 503: "Database unavailable"}


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "error.html", request, {"title": title, "message": message, "session": None,
                                "partial": "HX-Request" in request.headers}, status=status)


def see_other(location: str) -> web.Response:
    """303: after a form post, the browser loads the result with a GET."""
    return web.Response(status=303, headers={"Location": location})


async def to_workbench(request: web.Request) -> web.StreamResponse:
    return see_other("/ui/")


# --- sessions -------------------------------------------------------------------------


async def require_session(request: web.Request) -> Session:
    session = await cookie_session(request)
    if session is None:
        raise LoginRequired()
    return session


async def read_form(request: web.Request, session: Session) -> MultiDictProxy[Any]:
    """The posted form, once its CSRF token is the session's (or the header htmx sends)."""
    form = await request.post()
    sent = form.get("csrf_token") or request.headers.get(CSRF_HEADER)
    if not csrf_matches(session, sent if isinstance(sent, str) else None):
        raise e.Forbidden("this form's CSRF token is missing or out of date: "
                          "reload the page and try again")
    return form


def _text(form: MultiDictProxy[Any], name: str, limit: int = 1000) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise e.ValidationFailed(f"{name} must be text", [{"field": name, "message": "text"}])
    if len(value) > limit:
        raise e.ValidationFailed(f"{name} is too long", [{"field": name,
                                                          "message": f"at most {limit}"}])
    return value.strip()


def _comment(form: MultiDictProxy[Any]) -> str | None:
    """A comment as the API takes it (kevin.domain.match_models.Comment), None if empty."""
    text = _text(form, "comment", COMMENT_LIMIT)
    if "\x00" in text:
        raise e.ValidationFailed("a comment cannot hold a NUL character",
                                 [{"field": "comment", "message": "no NUL"}])
    return text or None


def _safe_next(target: str | None) -> str:
    """Only a path of the workbench: never another site (an open redirect)."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return _login_page(request, None, 200)


def _login_page(request: web.Request, message: str | None, status: int) -> web.Response:
    # The login form has no session yet: its CSRF token is a cookie of its own, which the
    # post must repeat (another site can make a browser post, but not read the cookie).
    token = secrets.token_urlsafe(32)
    response = aiohttp_jinja2.render_template(
        "login.html", request,
        {"session": None, "csrf_token": token, "message": message,
         "next": _safe_next(request.query.get("next"))}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        path="/ui/login", secure=request.secure, max_age=3600)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    sent, expected = form.get("csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE)
    if not (isinstance(sent, str) and expected
            and secrets.compare_digest(sent.encode(), expected.encode())):
        return _login_page(request, "The form had expired: please try again.", 403)
    try:
        token, session = await request.config_dict[WORKBENCH].login(_text(form, "api_key"))
    except e.Unauthorized as error:
        return _login_page(request, error.message, 401)
    log.info("workbench login", participant=session.participant or "admin")
    response = see_other(_safe_next(_text(form, "next")))
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure,
                        max_age=int((session.expires_at - datetime.now(UTC)).total_seconds()))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    await read_form(request, session)
    await request.config_dict[WORKBENCH].logout(request.cookies[COOKIE])
    response = see_other("/ui/login")
    response.del_cookie(COOKIE, path="/")
    return response


# --- pages ----------------------------------------------------------------------------


def _page(request: web.Request, template: str, session: Session,
          context: dict[str, Any], status: int = 200) -> web.Response:
    """A whole page, or only its live region when htmx asks (``HX-Request``)."""
    context = {**context, "session": session, "now": datetime.now(UTC),
               "feed_events": FEED_EVENTS, "count_bound": COUNT_BOUND,
               "partial": "HX-Request" in request.headers}
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def _feed_url(request: web.Request, participant: str | None) -> str:
    """Where the page's EventSource starts: after what this render has already seen."""
    query = {"after": str(max(request.config_dict[FEED].watch.head, 0))}
    if participant is not None:
        query["participant"] = participant
    return "/v1/feed?" + urlencode(query)


def _book(request: web.Request, session: Session, required: bool) -> str | None:
    """Whose trades a page is about: the participant's own; for the admin
    ``?participant=`` (required where a page is about one trade)."""
    named = request.query.get("participant") or None
    if named is not None and not _PARTICIPANT.fullmatch(named):
        raise e.ValidationFailed("participant is not a participant name", [])
    if not session.is_admin:
        if named not in (None, session.participant):
            raise e.NotFound("no such trade")
        return session.participant
    if required and named is None:
        raise e.ValidationFailed("the admin must name a participant", [])
    return named


def _filter(request: web.Request, name: str, pattern: re.Pattern[str]) -> str | None:
    value = request.query.get(name, "").strip() or None
    if value is not None and not pattern.fullmatch(value):
        raise e.ValidationFailed(f"{name} is not valid", [{"field": name,
                                                           "message": pattern.pattern}])
    return value


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    await require_session(request)
    return see_other("/ui/exceptions")


def _exceptions_query(request: web.Request, session: Session,
                      limit: int) -> tuple[str, str, ExceptionsQuery]:
    """The tab, the age filter's key and the query of ``/ui/exceptions``'s parameters."""
    tab = request.query.get("tab") or "mismatched"
    if tab not in TAB_LABELS:
        raise e.ValidationFailed("unknown tab", [{"field": "tab",
                                                  "message": ", ".join(TAB_LABELS)}])
    age_key = request.query.get("age", "")
    if age_key not in AGES:
        raise e.ValidationFailed("unknown age", [{"field": "age", "message": ", ".join(AGES)}])
    age_limit = AGES[age_key]
    # The proposals tab lists proposals, not trades: the trade query then only counts.
    return tab, age_key, ExceptionsQuery(
        tab=tab if tab in TABS else "mismatched",
        participant=_book(request, session, required=False),
        product=_filter(request, "product", _PRODUCT),
        other=_filter(request, "counterparty", _PARTICIPANT),
        submitted_before=datetime.now(UTC) - age_limit if age_limit else None,
        limit=limit if tab in TABS else 0)


# Rows of the exceptions page, and of its CSV (the whole list, for a spreadsheet).
PAGE_ROWS = 500
CSV_ROWS = 10_000


@routes.get("/exceptions.csv")
async def exceptions_csv(request: web.Request) -> web.Response:
    """The trades of a tab under the page's filters, as CSV (not the proposals tab)."""
    session = await require_session(request)
    tab, _, query = _exceptions_query(request, session, CSV_ROWS)
    if tab not in TABS:
        raise e.ValidationFailed("the proposals tab has no CSV", [{"field": "tab",
                                                                   "message": ", ".join(TABS)}])
    found = await request.config_dict[WORKBENCH].exceptions(query)
    name = f"kevin-{tab}-{query.participant or 'all'}-{found.now:%Y%m%dT%H%M%SZ}.csv"
    return web.Response(text=exports.exceptions_csv(found.trades, found.notes),
                        content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


@routes.get("/exceptions")
async def exceptions(request: web.Request) -> web.Response:
    session = await require_session(request)
    tab, age_key, query = _exceptions_query(request, session, PAGE_ROWS)
    book = query.participant
    found = await request.config_dict[WORKBENCH].exceptions(query)
    proposals = await _open_proposals(request, book)
    counts = {**found.counts, PROPOSALS_TAB: len(proposals)}
    filters = {"tab": tab, "product": query.product or "", "counterparty": query.other or "",
               "age": age_key, "participant": book or "" if session.is_admin else ""}
    actions = (["force_match", "break"] if session.is_admin else ["cancel"])
    return _page(request, "exceptions.html", session, {
        "tab": tab, "tabs": TAB_LABELS, "counts": counts, "trades": found.trades,
        "notes": found.notes,
        "clock_now": found.now, "refresh_in": _seconds_until(found.next_cutoff, found.now),
        "limit": query.limit, "filters": filters, "ages": AGE_LABELS, "book": book,
        "tab_link": lambda t: "/ui/exceptions?" + urlencode({**filters, "tab": t}),
        "csv_link": "/ui/exceptions.csv?" + urlencode(filters), "csv_rows": CSV_ROWS,
        "feed_url": _feed_url(request, book), "bulk_actions": {
            a: BULK_ACTIONS[a] for a in actions},
        "trade_link": _trade_link(session), "proposals": proposals,
        "proposal_link": _proposal_link(session),
    })


def _seconds_until(instant: datetime | None, now: datetime) -> int | None:
    """Whole seconds from ``now`` until just after ``instant`` (overdue is strictly
    after the cut-off), within CUTOFF_REFRESH_BOUNDS; None: nothing to wait for."""
    if instant is None:
        return None
    low, high = CUTOFF_REFRESH_BOUNDS
    return min(max(int((instant - now).total_seconds()) + 1, low), high)


async def _open_proposals(request: web.Request, book: str | None) -> list[Proposal]:
    """The open proposals a book made or received (the admin: every one), oldest first;
    at most COUNT_BOUND."""
    listing = await request.config_dict[KEVIN].agreements.list_proposals(
        book, "open", None, COUNT_BOUND)
    return sorted(listing.proposals, key=lambda p: p.created_at)


def _proposal_link(session: Session) -> Callable[[str, str], str | None]:
    """A proposal's trade, where the viewer may open it."""
    def link(participant: str, trade_id: str) -> str | None:
        if session.is_admin:
            return f"/ui/trades/{trade_id}?" + urlencode({"participant": participant})
        return f"/ui/trades/{trade_id}" if participant == session.participant else None
    return link


def _trade_link(session: Session) -> Callable[[Trade], str | None]:
    """The trade page of a row, where the viewer may open it (not another's trade)."""
    def link(trade: Trade) -> str | None:
        if session.is_admin:
            return f"/ui/trades/{trade.trade_id}?" + urlencode(
                {"participant": trade.participant})
        if trade.participant == session.participant:
            return f"/ui/trades/{trade.trade_id}"
        return None
    return link


def _trade_id(request: web.Request) -> str:
    trade_id = request.match_info["trade_id"]
    if not _TRADE_ID.fullmatch(trade_id):
        raise e.NotFound(f"no trade {trade_id!r}")
    return trade_id


def _as_of(request: web.Request) -> datetime | None:
    """``?as_of=``: RFC 3339, or a ``datetime-local`` input's value read as UTC."""
    raw = request.query.get("as_of", "").strip()
    if not raw:
        return None
    try:
        instant = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise e.ValidationFailed("as_of must be a date and time, e.g. 2026-11-21T10:00:00Z",
                                 [{"field": "as_of", "message": "a date and time"}]) from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


@routes.get("/trades")
async def find_trade(request: web.Request) -> web.Response:
    """The header's "Find a trade": straight to its page when one book has it; the admin
    chooses among the participants when several do."""
    session = await require_session(request)
    trade_id = request.query.get("trade_id", "").strip()
    if not _TRADE_ID.fullmatch(trade_id):
        raise e.ValidationFailed("trade_id is not a trade id",
                                 [{"field": "trade_id", "message": _TRADE_ID.pattern}])
    kevin: TradeService = request.config_dict[KEVIN]
    book = None if session.is_admin else session.participant
    holders = await kevin.holders(trade_id, book)
    if len(holders) == 1:
        return _back_to_trade(holders[0], trade_id, session.is_admin)
    # Not the book's own id: perhaps the counterparty's, read out on the phone. Its trade
    # leads to the book's own when it points at exactly one.
    naming = [] if book is None or holders else await kevin.naming(book, trade_id)
    ours = list(dict.fromkeys(i for t in naming for i in t.counterparty_trade_ids()))
    if book is not None and len(ours) == 1:
        return _back_to_trade(book, ours[0], False)
    return _page(request, "found.html", session, {
        "trade_id": trade_id, "holders": holders, "naming": naming,
        "links": [f"/ui/trades/{trade_id}?" + urlencode({"participant": p}) for p in holders],
    }, status=200 if holders or naming else 404)


@routes.get("/trades/{trade_id}")
async def trade_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    participant = _book(request, session, required=True)
    assert participant is not None
    trade_id = _trade_id(request)
    kevin: TradeService = request.config_dict[KEVIN]
    versions = await kevin.versions(participant, trade_id)
    latest, clock_now = await request.config_dict[WORKBENCH].aged(versions[-1])
    as_of = _as_of(request)
    shown: Trade | None = latest
    if as_of is not None:
        shown = next((v for v in reversed(versions) if v.recorded_at <= as_of), None)
    on_this_trade = [p for p in await _open_proposals(request, participant)
                     if (participant, trade_id) in ((p.proposer, p.trade_id),
                                                    (p.counterparty, p.counterparty_trade_id))]
    notes, notes_total = await kevin.newest_notes(participant, trade_id, NOTES_SHOWN)
    return _page(request, "trade.html", session, {
        "notes": notes, "notes_total": notes_total, "note_limit": NOTE_LIMIT,
        "proposals": on_this_trade, "proposal_link": _proposal_link(session),
        "trade": latest, "shown": shown, "versions": list(reversed(versions)),
        "clock_now": clock_now, "refresh_in": _seconds_until(
            latest.cutoff_at if latest.cutoff_at and latest.cutoff_at >= clock_now
            else None, clock_now),
        "as_of": as_of, "participant": participant,
        "self_link": f"/ui/trades/{trade_id}" + (
            "?" + urlencode({"participant": participant}) if session.is_admin else ""),
        "counterparty_link": (
            (lambda t: f"/ui/trades/{t}?" + urlencode({"participant": latest.counterparty}))
            if session.is_admin else None),
        "feed_url": _feed_url(request, participant),
        "suggested": _suggested_counterparty_trade(latest),
    })


def _suggested_counterparty_trade(trade: Trade) -> str:
    """The counterparty trade a force-match would most likely name: the nearest miss."""
    return trade.mismatches[0].counterparty_trade_id if trade.mismatches else ""


def _back_to_trade(participant: str, trade_id: str, admin: bool) -> web.Response:
    query = "?" + urlencode({"participant": participant}) if admin else ""
    return see_other(f"/ui/trades/{trade_id}{query}")


def _version(form: MultiDictProxy[Any]) -> int:
    raw = _text(form, "version", 18)
    if not raw.isascii() or not raw.isdigit():
        raise e.ValidationFailed("version must be the version shown", [])
    return int(raw)


@routes.post("/trades/{trade_id}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    form = await read_form(request, session)
    if session.participant is None:
        raise e.Forbidden("trades are cancelled by their participant, not the admin")
    trade_id = _trade_id(request)
    await request.config_dict[KEVIN].cancel(session.participant, trade_id, _version(form))
    return _back_to_trade(session.participant, trade_id, False)


@routes.post("/trades/{trade_id}/notes")
async def add_note(request: web.Request) -> web.StreamResponse:
    """A note on the trade, written with the key the session was opened with (the admin:
    on the form's participant's trade)."""
    session = await require_session(request)
    form = await read_form(request, session)
    participant = (_form_participant(form, "participant") if session.is_admin
                   else session.participant)
    assert participant is not None
    trade_id = _trade_id(request)
    note = parse_model(NoteCreate, {"text": _text(form, "text", NOTE_LIMIT)})
    await request.config_dict[KEVIN].add_note(
        participant, trade_id, note.text,
        None if session.is_admin else session.credential_hash)
    return _back_to_trade(participant, trade_id, session.is_admin)


def _require_admin(session: Session) -> None:
    if not session.is_admin:
        raise e.Forbidden("this needs the admin")


def _form_participant(form: MultiDictProxy[Any], name: str) -> str:
    value = _text(form, name, 32)
    if not _PARTICIPANT.fullmatch(value):
        raise e.ValidationFailed(f"{name} is not a participant name", [])
    return value


def _form_trade_id(form: MultiDictProxy[Any], name: str) -> str:
    value = _text(form, name, 64)
    if not _TRADE_ID.fullmatch(value):
        raise e.ValidationFailed(f"{name} is not a trade id", [])
    return value


@routes.post("/admin/force-match")
async def force_match(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    form = await read_form(request, session)
    _require_admin(session)
    participant, trade_id = _form_participant(form, "participant"), _form_trade_id(
        form, "trade_id")
    legs = [(participant, trade_id), (_form_participant(form, "counterparty"),
                                      _form_trade_id(form, "counterparty_trade_id"))]
    await request.config_dict[KEVIN].force_match(
        legs, _comment(form), ADMIN_ACTOR)
    return _back_to_trade(participant, trade_id, True)


@routes.post("/admin/break")
async def break_match(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    form = await read_form(request, session)
    _require_admin(session)
    participant, trade_id = _form_participant(form, "participant"), _form_trade_id(
        form, "trade_id")
    try:
        match_id = UUID(_text(form, "match_id", 64))
    except ValueError:
        raise e.NotFound("no such match") from None
    await request.config_dict[KEVIN].break_match(
        match_id, _comment(form), ADMIN_ACTOR)
    return _back_to_trade(participant, trade_id, True)


# --- the STP report ---------------------------------------------------------------------

# The by-day chart is one report per day: drawn for ranges up to this many days.
DAILY_CHART_DAYS = 31


def _query_date(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    try:
        if len(raw) != 10:  # fromisoformat would also take 20261120
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise e.ValidationFailed(f"{name} must be a date (YYYY-MM-DD)",
                                 [{"field": name, "message": "e.g. 2026-11-20"}]) from None


@routes.get("/reports/stp")
async def stp_report(request: web.Request) -> web.Response:
    session = await require_session(request)
    book = _book(request, session, required=False)
    today = datetime.now(UTC).date()
    start = _query_date(request, "from", today - timedelta(days=6))
    end = _query_date(request, "to", today)
    group_by = request.query.get("group_by") or None
    query = StpQuery.of(start, end, book, group_by, None)
    reports = request.config_dict[KEVIN].reports
    report = await reports.stp(query)
    days = (end - start).days + 1
    daily = []
    if days <= DAILY_CHART_DAYS:
        for offset in range(days):
            day = start + timedelta(days=offset)
            one = await reports.stp(StpQuery.of(day, day, book, None, report.as_of))
            daily.append(Bar(day.isoformat(), one.matched_on_trade_date_pct))
    ttm = report.time_to_match_seconds
    bars = {
        "chart-time-to-match": ("Time to match (seconds)", [
            Bar("median", ttm.p50), Bar("90th percentile", ttm.p90),
            Bar("99th percentile", ttm.p99)], " s", None),
        "chart-matched-on-trade-date": (
            "Share matched on trade date, by day (%)", daily, "%", 100),
        "chart-mismatch-fields": ("Mismatches by field (trades)", [
            Bar(field, n) for field, n in report.mismatch_fields.items()], "", None),
    }
    charts = [(title, bar_chart(chart_id, title, found, unit, scale_to))
              for chart_id, (title, found, unit, scale_to) in bars.items()
              if found or chart_id != "chart-matched-on-trade-date"]
    return _page(request, "report.html", session, {
        "report": report, "book": book, "charts": charts, "days": days,
        "rows": [("All", report), *((g.key, g) for g in report.groups)],
        "daily_days": DAILY_CHART_DAYS, "group_bys": GROUP_BYS,
        "filters": {"from": start.isoformat(), "to": end.isoformat(),
                    "group_by": group_by or "", "participant": book or ""},
    })


# --- profiles and rules (admin) ----------------------------------------------------------


def _pretty(value: Any) -> str:
    """JSON for a person to read (values already dumped in JSON mode: no decimals)."""
    return json.dumps(value, indent=2)


_PROFILE_NAME = re.compile(PROFILE_NAME_PATTERN)
_PROFILE_EXAMPLE = ('{"participants": ["BANKA", "BANKB"], "product": "XAU",\n'
                    ' "fields": {"price": {"abs": "1.00"}}}')


@routes.get("/admin/profiles")
async def profiles_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    _require_admin(session)
    return await _profiles_page(request, session, _as_of(request))


async def _profiles_page(request: web.Request, session: Session, as_of: datetime | None,
                         result: ReplayResult | None = None,
                         saved: ProfileVersion | None = None, name: str = "",
                         profile_text: str = "", since: str = "") -> web.Response:
    listing = await request.config_dict[KEVIN].agreements.list_profiles(
        "", COUNT_BOUND, as_of)
    return _page(request, "profiles.html", session, {
        "profiles": [(p, _pretty(p.model_dump(mode="json", include={
            "participants", "product", "fields", "matched_cancel", "cutoff"})))
            for p in listing.profiles],
        "more": listing.next_after is not None, "as_of": as_of, "result": result,
        "saved": saved, "name": name, "profile_text": profile_text or _PROFILE_EXAMPLE,
        "since": since or (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
    })


def _form_json(form: MultiDictProxy[Any], name: str) -> tuple[Any, str]:
    text = _text(form, name, 64 * 1024)
    try:
        return jsoncodec.loads(text.encode()), text
    except ValueError as error:
        raise e.ValidationFailed(f"{name}: not valid JSON: {error}", []) from None


def _form_since(form: MultiDictProxy[Any]) -> datetime:
    try:
        since = datetime.fromisoformat(_text(form, "since", 64).replace("Z", "+00:00"))
    except ValueError:
        raise e.ValidationFailed("since must be a date and time", []) from None
    return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)


def _replay_action(form: MultiDictProxy[Any]) -> str:
    """``dry_run`` shows what would change; ``save`` stores the change (matching uses it
    from now on); ``save_and_rematch`` also applies the replay (reason ``replayed``)."""
    action = _text(form, "action", 32)
    if action not in ("dry_run", "save", "save_and_rematch"):
        raise e.ValidationFailed("unknown action", [])
    return action


@routes.post("/admin/profiles")
async def profiles_action(request: web.Request) -> web.Response:
    session = await require_session(request)
    form = await read_form(request, session)
    _require_admin(session)
    action = _replay_action(form)
    name = _text(form, "name", 64)
    if not _PROFILE_NAME.fullmatch(name):
        raise e.ValidationFailed("not a profile name", [{"field": "name",
                                                         "message": PROFILE_NAME_PATTERN}])
    body, text = _form_json(form, "profile")
    profile = parse_model(Profile, body)
    since = _form_since(form)
    kevin = request.config_dict[KEVIN]
    saved = None
    if action != "dry_run":
        saved = await kevin.agreements.put_profile(name, profile, ADMIN_ACTOR)
    result = await Replayer(kevin.pool).replay(
        since, {}, apply=action == "save_and_rematch", actor=ADMIN_ACTOR,
        profiles={name: profile})
    return await _profiles_page(request, session, None, result, saved, name, text,
                                _text(form, "since", 64))


@routes.get("/admin/rules")
async def rules_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    _require_admin(session)
    product = _filter(request, "product", _PRODUCT)
    current = await _rules_or_none(request.config_dict[KEVIN], product) if product else None
    return _rules_page(request, session, product, current, None, None, "", "")


def _rules_page(request: web.Request, session: Session, product: str | None,
                current: RulesVersion | None, result: ReplayResult | None,
                saved: RulesVersion | None, rules_text: str, since: str,
                status: int = 200) -> web.Response:
    default = rules_text or (
        _pretty(current.rules().model_dump(mode="json", exclude_defaults=True)) if current
        else '{"price_tolerance": {"abs": "0.50"}}')
    return _page(request, "rules.html", session, {
        "product": product or "", "current": current,
        "current_text": _pretty(current.rules().model_dump(mode="json")) if current else "",
        "rules_text": default, "result": result, "saved": saved,
        "since": since or (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
    }, status)


def _form_rules(form: MultiDictProxy[Any]) -> tuple[str, Rules, str, datetime]:
    product = _text(form, "product", 32)
    if not _PRODUCT.fullmatch(product):
        raise e.ValidationFailed("not a product name", [{"field": "product",
                                                         "message": _PRODUCT.pattern}])
    body, text = _form_json(form, "rules")
    return product, parse_model(RulesUpdate, body).rules(), text, _form_since(form)


@routes.post("/admin/rules")
async def rules_action(request: web.Request) -> web.Response:
    session = await require_session(request)
    form = await read_form(request, session)
    _require_admin(session)
    action = _replay_action(form)
    product, rules, text, since = _form_rules(form)
    kevin = request.config_dict[KEVIN]
    saved = None
    if action != "dry_run":
        saved = await kevin.put_rules(product, rules, ADMIN_ACTOR)
    result = await Replayer(kevin.pool).replay(
        since, {product: rules}, apply=action == "save_and_rematch", actor=ADMIN_ACTOR)
    current = saved or await _rules_or_none(kevin, product)
    return _rules_page(request, session, product, current, result, saved, text,
                       _text(form, "since", 64))


async def _rules_or_none(kevin: TradeService, product: str) -> RulesVersion | None:
    try:
        return await kevin.get_rules(product)
    except e.NotFound:
        return None


# --- participants and their keys (admin) ------------------------------------------------


@routes.get("/admin/participants")
async def participants_page(request: web.Request) -> web.Response:
    session = await require_session(request)
    _require_admin(session)
    return await _participants_page(request, session)


async def _participants_page(request: web.Request, session: Session,
                             issued: ApiKeyCreated | None = None,
                             revoked: tuple[str, ApiKey] | None = None) -> web.Response:
    listed, keys = await request.config_dict[KEVIN].participants_and_keys()
    return _page(request, "participants.html", session, {
        "participants": listed, "keys": keys, "issued": issued, "revoked": revoked,
        "within": REVOKED_EVERYWHERE_WITHIN_S})


@routes.post("/admin/participants")
async def participants_action(request: web.Request) -> web.Response:
    """``add`` a participant, ``add_key`` for one, or ``revoke_key`` one of its keys."""
    session = await require_session(request)
    form = await read_form(request, session)
    _require_admin(session)
    action = _text(form, "action", 16)
    name = _form_participant(form, "name")
    kevin = request.config_dict[KEVIN]
    if action in ("add", "add_key"):
        label = parse_model(ApiKeyCreate, {"label": _text(form, "label", LABEL_LIMIT) or None})
        issued = await (kevin.create_participant(name, label.label) if action == "add"
                        else kevin.add_key(name, label.label))
        return await _participants_page(request, session, issued=issued)
    if action == "revoke_key":
        public_id = _text(form, "key_id", 16)
        if not re.fullmatch(KEY_ID_PATTERN, public_id):
            raise e.ValidationFailed("not a key id", [{"field": "key_id",
                                                       "message": KEY_ID_PATTERN}])
        revoked = await revoke_key(request, name, public_id)
        return await _participants_page(request, session, revoked=(name, revoked))
    raise e.ValidationFailed("unknown action", [])


# --- proposals ------------------------------------------------------------------------


@routes.post("/proposals")
async def propose(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    form = await read_form(request, session)
    if session.participant is None:
        raise e.Forbidden("proposals are made by a trade's participant, not the admin")
    kind = _text(form, "kind", 16)
    if kind not in ("match", "cancel"):
        raise e.ValidationFailed("kind is match or cancel", [{"field": "kind",
                                                              "message": "match, cancel"}])
    trade_id = _form_trade_id(form, "trade_id")
    await request.config_dict[KEVIN].agreements.propose(
        session.participant, trade_id, typing.cast(ProposalKind, kind),
        _form_trade_id(form, "counterparty_trade_id"), _comment(form))
    return _back_to_trade(session.participant, trade_id, False)


@routes.post("/proposals/{proposal_id}/{decision}")
async def decide(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    form = await read_form(request, session)
    decision = request.match_info["decision"]
    if decision not in DECISIONS:
        raise e.NotFound("no such action")
    try:
        proposal_id = UUID(request.match_info["proposal_id"])
    except ValueError:
        raise e.NotFound("no such proposal") from None
    await request.config_dict[KEVIN].agreements.decide(
        session.participant, proposal_id, decision, _comment(form))
    return see_other(_safe_next(_text(form, "next")) if form.get("next")
                     else "/ui/exceptions?tab=proposals")


# --- bulk actions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    participant: str
    trade_id: str
    ok: bool
    message: str
    trade: Trade | None = None


async def _one(kevin: TradeService, session: Session, action: str, selected: str,
               comment: str | None) -> Outcome:
    """One engine operation for one selected trade (``PARTICIPANT/TRADE_ID/VERSION``)."""
    participant, _, rest = selected.partition("/")
    trade_id, _, version_text = rest.rpartition("/")
    if not (_PARTICIPANT.fullmatch(participant) and _TRADE_ID.fullmatch(trade_id)
            and version_text.isascii() and version_text.isdigit()):
        return Outcome(participant, trade_id or rest, False, "not a trade of this list")
    version = int(version_text)
    try:
        if not session.is_admin and participant != session.participant:
            raise e.NotFound(f"no trade {trade_id}")
        if action == "cancel":
            if session.participant is None:
                raise e.Forbidden("trades are cancelled by their participant")
            done = await kevin.cancel(participant, trade_id, version)
            return Outcome(participant, trade_id, True, "cancelled", done)
        current = await kevin.current(participant, trade_id)
        if current.version != version:
            raise e.VersionConflict(current.version, version)
        if action == "force_match":
            if not current.mismatches:
                raise e.Conflict("no counterparty trade is named: open the trade to pick one")
            other = (current.counterparty, current.mismatches[0].counterparty_trade_id)
            first, _ = await kevin.force_match(
                [(participant, trade_id), other], comment, ADMIN_ACTOR)
            return Outcome(participant, trade_id, True,
                           f"matched with {other[0]} {other[1]}", first)
        if current.match is None or current.status != "matched":
            raise e.Conflict(f"trade {trade_id} is {current.status}, not matched")
        legs = await kevin.break_match(current.match.match_id, comment, ADMIN_ACTOR)
        mine = next(t for t in legs if (t.participant, t.trade_id) == (participant, trade_id))
        return Outcome(participant, trade_id, True, "match broken", mine)
    except e.VersionConflict as conflict:
        return Outcome(participant, trade_id, False,
                       f"changed since the list was shown ({conflict.message})")
    except e.KevinError as error:
        return Outcome(participant, trade_id, False, error.message)


@routes.post("/bulk")
async def bulk(request: web.Request) -> web.Response:
    session = await require_session(request)
    form = await read_form(request, session)
    action = _text(form, "action", 32)
    allowed = ("force_match", "break") if session.is_admin else ("cancel",)
    if action not in allowed:
        raise e.ValidationFailed("choose an action", [{"field": "action",
                                                       "message": ", ".join(allowed)}])
    selected = [s for s in form.getall("selected", []) if isinstance(s, str)]
    if not selected:
        raise e.ValidationFailed("select at least one trade", [])
    if len(selected) > BULK_LIMIT:
        raise e.ValidationFailed(f"select at most {BULK_LIMIT} trades at once", [])
    comment = _comment(form)
    kevin = request.config_dict[KEVIN]
    # One engine operation per trade, one after another: each commits or fails alone,
    # as the same request to the JSON API would.
    outcomes = [await _one(kevin, session, action, s, comment) for s in selected]
    log.info("workbench bulk action", action=action, trades=len(outcomes),
             failed=sum(not o.ok for o in outcomes))
    return _page(request, "bulk.html", session, {
        "action": BULK_ACTIONS[action], "outcomes": outcomes,
        "trade_link": _trade_link(session)})
