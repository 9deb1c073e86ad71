"""Prometheus metrics at ``GET /metrics``.

Every app has its own ``CollectorRegistry`` (two apps in one test process never share a
counter). Three kinds of figure:

- request latency per route template, method and status, observed by a middleware;
- trade outcomes — submissions by result, matches, mismatches — counted from what the
  API acknowledged: the middleware reads the outcome off the response of the write
  routes (a batch's or an import's lines it finds counted already, in
  ``request[LINES]``), so the handlers and the engine stay free of metrics code and a
  count never includes a write the client was not told about;
- figures read at scrape time: the age of the oldest unmatched trade and the feed's
  backlog from the database (each a probe of a small partial index, under a short
  timeout), and the connection pool's usage.

Under ``kevin serve --workers N`` (kevin.workers sets PROMETHEUS_MULTIPROC_DIR) every
worker writes its figures to that directory and a scrape, whichever worker answers it,
reads all of them (prometheus_client's multiprocess mode): counters and histograms are
summed, pool and stream gauges summed over live workers (each worker's pool figure as of
the last scrape it answered), database figures are the latest any worker read.
Per-process figures (CPU, memory) are left out there: they would describe only the
worker that happened to answer.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from kevin.api.app_keys import KEVIN
from kevin.api.errors import Handler, reported_status
from kevin.engine.health import scrape
from kevin.feed.runtime import FEED

log = structlog.get_logger(__name__)

SCRAPE_DB_TIMEOUT = 2.0
# How a gauge's values from several workers combine (see the module docstring).
LATEST: Literal["mostrecent"] = "mostrecent"
SUMMED: Literal["livesum"] = "livesum"

# Routes whose responses carry a trade (or a batch of results) worth counting.
SUBMIT = ("POST", "/v1/trades")
BATCH = ("POST", "/v1/trades/batch")
IMPORT = ("POST", "/v1/trades/import")
AMEND = ("PUT", "/v1/trades/{trade_id}")
FORCE = ("POST", "/v1/admin/matches")
OBSERVED = {SUBMIT, BATCH, IMPORT, AMEND, FORCE}
# An import's records that change a trade rather than submit one (MT300 AMND, CANC).
CHANGES = {"amended", "cancelled"}

@dataclass(frozen=True)
class LinesAnswered:
    """What an answer of many lines (a batch's, an import's) told the client: how many
    lines of each result, and of the trades its lines created or amended, how many it
    answered matched by matching and how many mismatched."""

    results: dict[str, int]
    matched: int
    mismatched: int


def lines_answered(answer: dict[str, Any]) -> LinesAnswered:
    """The counts of an answer given as Python values (``{"results": [...]}``)."""
    lines = answer.get("results", ())
    results = collections.Counter(line.get("result", "invalid") for line in lines)
    matched, mismatched = _written(line["trade"] for line in lines
                                   if line.get("result") in ("created", "amended")
                                   and line.get("trade"))
    return LinesAnswered(dict(results), matched, mismatched)


def _written(trades: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Of versions the API returned, how many record a match by matching, and how many
    a mismatch."""
    matched = mismatched = 0
    for trade in trades:
        status = trade.get("status")
        if status == "matched" and trade.get("reason") == "matched":
            matched += 1
        elif status == "mismatched":
            mismatched += 1
    return matched, mismatched


# Where a batch's or an import's handler leaves its answer counted (lines_answered) in
# place of the answer itself: the answer, megabytes of JSON, then need not outlive its
# writing as Python values — hundreds of thousands of them, which the collector, paused
# while the request builds them, would walk once it resumed.
LINES = web.RequestKey("lines", LinesAnswered)

# How a refused single submission is counted, by status.
REFUSED = {409: "exists_with_different_fields", 503: "unavailable"}


class Metrics:
    """The registry and every metric Kevin exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        if not self.multiprocess:
            ProcessCollector(registry=r)
        self.requests = Histogram(
            "kevin_http_request_duration_seconds", "HTTP request latency",
            ["route", "method", "status"], registry=r,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
        )
        self.submissions = Counter(
            "kevin_submissions", "Trade submissions by result (a batch counts per line)",
            ["result"], registry=r,
        )
        self.matches = Counter(
            "kevin_matches", "Matches made: auto by the engine, forced by an operator",
            ["kind"], registry=r,
        )
        self.group_sizes = Histogram(
            "kevin_group_commit_size",
            "Single writes (POST, PUT, DELETE of one trade) decided in one transaction "
            "by group commit (1: a write that found nothing in flight)",
            registry=r, buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.mismatches = Counter(
            "kevin_mismatches", "Submissions and amendments that came back mismatched",
            registry=r,
        )
        self.stp_rate = Gauge(
            "kevin_match_rate",
            "Straight-through processing: trades auto-matched (two per match) over trades "
            "created, since the service started; 0 before the first trade",
            registry=r, multiprocess_mode=LATEST,
        )
        self.oldest_unmatched = Gauge(
            "kevin_oldest_unmatched_age_seconds",
            "Age of the oldest live unmatched or mismatched trade (0 when there is none)",
            registry=r, multiprocess_mode=LATEST,
        )
        self.overdue = Gauge(
            "kevin_overdue_trades",
            "Live trades past their cut-off while unmatched or mismatched, by product",
            ["product"], registry=r, multiprocess_mode=LATEST)
        self._overdue_products: set[str] = set()
        self.overdue_notices = Counter(
            "kevin_overdue_notices",
            "Overdue notices this process's scan recorded (each is one feed update for the "
            "trade's participant and one for its counterparty)", registry=r)
        self._notices_counted = 0
        self.feed_unsequenced = Gauge(
            "kevin_feed_unsequenced_updates",
            "Feed updates written but not yet given a seq (capped at 100000)", registry=r,
            multiprocess_mode=LATEST,
        )
        self.feed_lag = Gauge(
            "kevin_feed_lag_seconds",
            "Age of the oldest feed update still waiting for a seq (0 when none waits)",
            registry=r, multiprocess_mode=LATEST,
        )
        self.feed_last_seq = Gauge("kevin_feed_last_seq", "The highest seq assigned",
                                   registry=r, multiprocess_mode=LATEST)
        self.relay_position = Gauge(
            "kevin_relay_position", "The highest seq a relay has published (its checkpoint)",
            ["relay"], registry=r, multiprocess_mode=LATEST)
        self.relay_stubbed = Gauge(
            "kevin_relay_stubbed",
            "Updates a relay published as stubs, too large for its transport (kevin.feed.relay)",
            ["relay"], registry=r, multiprocess_mode=LATEST)
        self.sse_streams = Gauge("kevin_feed_sse_streams", "SSE feed streams open",
                                 registry=r, multiprocess_mode=SUMMED)
        self.database_up = Gauge(
            "kevin_database_up", "1 if the last scrape could read the database", registry=r,
            multiprocess_mode=LATEST)
        self.pool = Gauge("kevin_db_pool_connections", "Connections in the pools by state",
                          ["state"], registry=r, multiprocess_mode=SUMMED)
        self.pool_max = Gauge("kevin_db_pool_max_connections", "The pools' maximum size",
                              registry=r, multiprocess_mode=SUMMED)
        for result in ("created", "exists", "exists_with_different_fields", "invalid"):
            self.submissions.labels(result)
        for kind in ("auto", "forced"):
            self.matches.labels(kind)

    # --- outcomes --------------------------------------------------------------------

    def submitted(self, result: str) -> None:
        self.submissions.labels(result).inc()

    def trade_written(self, trade: dict[str, Any]) -> None:
        """A version the API returned: count the match or mismatch it records."""
        self.trades_written([trade])

    def trades_written(self, trades: Iterable[dict[str, Any]]) -> None:
        """``trade_written`` for many, each counter increased once: an increment is a
        lock and a write to the worker's file in multiprocess mode."""
        self._count_written(*_written(trades))

    def _count_written(self, matched: int, mismatched: int) -> None:
        if matched:
            self.matches.labels("auto").inc(matched)
        if mismatched:
            self.mismatches.inc(mismatched)

    def observe_outcome(self, key: tuple[str, str], status: int, body: Any) -> None:
        if key == SUBMIT:
            if status in (200, 201):
                self.submitted("created" if status == 201 else "exists")
                if status == 201:
                    self.trade_written(body)
            elif status in REFUSED:
                self.submitted(REFUSED[status])
            elif 400 <= status < 500 and status not in (401, 403):
                self.submitted("invalid")
        elif key in (BATCH, IMPORT):
            self.observe_lines(key, status, lines_answered(body))
        elif key == AMEND and status == 200:
            self.trade_written(body)
        elif key == FORCE and status == 201:
            # One force-match, whichever shape the response takes (legs or trades).
            self.matches.labels("forced").inc()

    def observe_lines(self, key: tuple[str, str], status: int, lines: LinesAnswered) -> None:
        """A batch's or an import's answer, counted: each line's submission by result
        (an import's changes are no submissions), and each counter increased once."""
        if key not in (BATCH, IMPORT) or status != 200:
            return
        for result, n in lines.results.items():
            if result not in CHANGES:
                self.submissions.labels(result).inc(n)
        self._count_written(lines.matched, lines.mismatched)

    # --- scrape ----------------------------------------------------------------------

    async def refresh(self, app: web.Application) -> None:
        """Read the figures that live in the database and the pool."""
        counted = self.collected()
        created = counted.get_sample_value("kevin_submissions_total", {"result": "created"})
        auto = counted.get_sample_value("kevin_matches_total", {"kind": "auto"})
        # 0 before the first trade: NaN would break alert rules and dashboards that compare it.
        self.stp_rate.set(min(1.0, 2 * (auto or 0) / created) if created else 0.0)
        pool = app[KEVIN].pool
        size, idle = pool.get_size(), pool.get_idle_size()
        self.pool.labels("in_use").set(size - idle)
        self.pool.labels("idle").set(idle)
        self.pool_max.set(pool.get_max_size())
        feed = app.get(FEED)
        if feed is not None:
            self.sse_streams.set(feed.active_streams)
            if feed.scanner is not None and feed.scanner.recorded > self._notices_counted:
                self.overdue_notices.inc(feed.scanner.recorded - self._notices_counted)
                self._notices_counted = feed.scanner.recorded
        stats = await scrape(pool, SCRAPE_DB_TIMEOUT)
        if stats is None:
            self.database_up.set(0)
            for gauge in (self.oldest_unmatched, self.feed_unsequenced, self.feed_lag):
                gauge.set(math.nan)
            return
        self.database_up.set(1)
        self.oldest_unmatched.set(_age(stats.now, stats.oldest_resting))
        self.feed_unsequenced.set(stats.unsequenced)
        self.feed_lag.set(_age(stats.now, stats.oldest_unsequenced))
        self.feed_last_seq.set(stats.last_seq or 0)
        # A product whose open trades are all gone reads 0, not its last count.
        for product in self._overdue_products - stats.overdue_by_product.keys():
            self.overdue.labels(product).set(0)
        for product, count in stats.overdue_by_product.items():
            self.overdue.labels(product).set(count)
        self._overdue_products |= stats.overdue_by_product.keys()
        for name, (position, stubbed) in stats.relays.items():
            self.relay_position.labels(name).set(position)
            self.relay_stubbed.labels(name).set(stubbed)

    def collected(self) -> CollectorRegistry:
        """This process's registry; under workers, one that reads every worker's figures."""
        if not self.multiprocess:
            return self.registry
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)
        return every_worker

    def exposition(self) -> bytes:
        return generate_latest(self.collected())


def _age(now: Any, then: Any) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


METRICS = web.AppKey("metrics", Metrics)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request by route template (bounded label values) and count outcomes."""
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = reported_status(response)
        return response
    except web.HTTPException as http:
        status = http.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away (nginx's convention)
        raise
    finally:
        route = _route(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).observe(
            time.perf_counter() - started)
        key = (request.method, route)
        lines = request.get(LINES)
        if lines is not None:
            metrics.observe_lines(key, status, lines)
        elif key in OBSERVED and isinstance(response, web.Response):
            try:
                raw = response.body
                body = orjson.loads(raw) if isinstance(raw, bytes) and raw else {}
            except (orjson.JSONDecodeError, TypeError):
                body = {}
            if isinstance(body, dict):
                metrics.observe_outcome(key, status, body)


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.refresh(request.app)
    # 0.0.4: the text format every Prometheus version scrapes; our names need no escaping.
    return web.Response(body=metrics.exposition(),
                        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def install(app: web.Application) -> None:
    """Add /metrics; ``observe`` must also be among the app's middlewares (outermost)."""
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_handler)
    group = app[KEVIN].group
    if group is not None:
        group.observers.append(app[METRICS].group_sizes.observe)
