"""/metrics: Prometheus text, one registry per app, figures that follow what happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from kevin.api.app import create_app
from kevin.api.metrics import Metrics
from kevin.domain.models import TradeTerms
from kevin.feed.runtime import FeedOptions
from kevin.store import database
from kevin.store import trades as store
from kevin.store.trades import NewVersion
from tests.conftest import ADMIN, ADMIN_TOKEN, Api, trade_body


async def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_the_stp_rate_is_zero_not_nan_before_the_first_trade(client):
    m = await scrape(client)
    assert value(m, "kevin_match_rate") == 0


async def test_submissions_are_counted_by_result(client, banks):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    await client.post("/v1/trades", json=trade_body(), headers=a)
    await client.post("/v1/trades", json=trade_body(price="1"), headers=a)
    await client.post("/v1/trades", json=trade_body("A-2", quantity="-1"), headers=a)
    await client.post("/v1/trades", json=trade_body("A-3"), headers=a)
    m = await scrape(client)
    assert value(m, "kevin_submissions_total", result="created") == 2
    assert value(m, "kevin_submissions_total", result="exists") == 1
    assert value(m, "kevin_submissions_total", result="exists_with_different_fields") == 1
    assert value(m, "kevin_submissions_total", result="invalid") == 1
    # Nothing matched (BANKB submitted nothing): the STP rate is 0 of 2.
    assert value(m, "kevin_match_rate") == 0


async def test_latency_is_observed_per_route_template(client, banks):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    for trade_id in ("A-0001", "nope-1", "nope-2"):
        await client.get(f"/v1/trades/{trade_id}", headers=a)
    await client.get("/no/such/path")
    m = await scrape(client)
    route = "/v1/trades/{trade_id}"
    name = "kevin_http_request_duration_seconds_count"
    assert value(m, name, route=route, method="GET", status="200") == 1
    assert value(m, name, route=route, method="GET", status="404") == 2
    assert value(m, name, route="/v1/trades", method="POST", status="201") == 1
    assert value(m, name, route="unmatched", method="GET", status="404") == 1
    assert not any("nope" in str(labels) for _, labels in m)


async def test_oldest_unmatched_age_and_feed_backlog_come_from_the_database(
        service, aiohttp_client, pool, conn):
    # An app without a sequencer, so the backlog stays put while it is compared and seqs
    # are assigned by hand below.
    client = await aiohttp_client(create_app(service, ADMIN_TOKEN,
                                             FeedOptions(sequencer=False)))
    banks = [await Api(client).participant(name) for name in ("BANKA", "BANKB")]
    m = await scrape(client)
    assert value(m, "kevin_oldest_unmatched_age_seconds") == 0
    assert value(m, "kevin_database_up") == 1
    body = trade_body()
    body.pop("trade_id")
    async with database.transaction(pool) as c:
        await store.insert_version(c, NewVersion(
            participant="BANKA", trade_id="OLD-1", version=1, status="unmatched",
            reason="submitted", terms=TradeTerms.model_validate(body), actor="BANKA",
            first_submitted_at=datetime.now(UTC) - timedelta(hours=1)))
    await client.post("/v1/trades", json=trade_body(), headers=banks[0])
    m = await scrape(client)
    assert 3600 <= value(m, "kevin_oldest_unmatched_age_seconds") < 3700
    waiting = await conn.fetchval("SELECT count(*) FROM feed WHERE seq IS NULL")
    assert value(m, "kevin_feed_unsequenced_updates") == waiting
    if waiting:
        assert value(m, "kevin_feed_lag_seconds") >= 0
    await conn.execute("UPDATE feed SET seq = (SELECT coalesce(max(seq), 0) FROM feed) + id "
                       "WHERE seq IS NULL")
    m = await scrape(client)
    assert value(m, "kevin_feed_unsequenced_updates") == 0
    assert value(m, "kevin_feed_lag_seconds") == 0
    assert value(m, "kevin_feed_last_seq") == await conn.fetchval("SELECT max(seq) FROM feed")


async def test_pool_usage_is_reported(client):
    m = await scrape(client)
    assert value(m, "kevin_db_pool_max_connections") == 20  # the pool fixture's size
    in_use = value(m, "kevin_db_pool_connections", state="in_use")
    idle = value(m, "kevin_db_pool_connections", state="idle")
    assert in_use >= 0 and idle >= 0 and in_use + idle >= 1


async def test_each_app_has_its_own_registry(service, aiohttp_client, banks, client):
    other = await aiohttp_client(create_app(service, ADMIN_TOKEN))
    await client.post("/v1/trades", json=trade_body(), headers=banks[0])
    assert value(await scrape(client), "kevin_submissions_total", result="created") == 1
    assert value(await scrape(other), "kevin_submissions_total", result="created") == 0


def test_outcomes_count_matches_and_mismatches_from_acknowledged_writes():
    m = Metrics()
    m.observe_outcome(("POST", "/v1/trades"), 201, {"status": "unmatched", "reason": "submitted"})
    m.observe_outcome(("POST", "/v1/trades"), 201, {"status": "matched", "reason": "matched"})
    m.observe_outcome(("PUT", "/v1/trades/{trade_id}"), 200,
                      {"status": "mismatched", "reason": "mismatched"})
    m.observe_outcome(("POST", "/v1/trades/batch"), 200, {"results": [
        {"line": 1, "result": "created", "trade": {"status": "matched", "reason": "matched"}},
        {"line": 2, "result": "invalid", "trade": None},
        {"line": 3, "result": "created", "trade": {"status": "unmatched"}},
    ]})
    m.observe_outcome(("POST", "/v1/admin/matches"), 201, {})
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(m.exposition().decode())
               for s in f.samples}
    assert samples[("kevin_matches_total", (("kind", "auto"),))] == 2
    assert samples[("kevin_matches_total", (("kind", "forced"),))] == 1
    assert samples[("kevin_mismatches_total", ())] == 1
    assert samples[("kevin_submissions_total", (("result", "created"),))] == 4
    assert samples[("kevin_submissions_total", (("result", "invalid"),))] == 1


async def test_matches_mismatches_and_the_stp_rate_follow_the_engine(client, banks):
    a, b = banks
    mirror = {"counterparty": "BANKA", "side": "buy", "attributes": {}}
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    resp = await client.post("/v1/trades", json=trade_body("B-1", **mirror), headers=b)
    assert (await resp.json())["status"] == "matched"
    await client.post("/v1/trades", json=trade_body("A-2", price="2000"), headers=a)
    resp = await client.post("/v1/trades", json=trade_body("B-2", price="2001", **mirror),
                             headers=b)
    assert (await resp.json())["status"] == "mismatched"
    resp = await client.post("/v1/admin/matches", headers=ADMIN, json={"legs": [
        {"participant": "BANKA", "trade_id": "A-2"}, {"participant": "BANKB", "trade_id": "B-2"}],
        "comment": "agreed by phone"})
    assert resp.status == 201, await resp.text()
    m = await scrape(client)
    assert value(m, "kevin_matches_total", kind="auto") == 1
    assert value(m, "kevin_matches_total", kind="forced") == 1
    assert value(m, "kevin_mismatches_total") == 1
    assert value(m, "kevin_submissions_total", result="created") == 4
    assert value(m, "kevin_match_rate") == 0.5  # 2 of 4 trades matched straight through


async def test_a_batch_counts_each_line(client, banks):
    from kevin import jsoncodec

    a, _ = banks
    body = b"\n".join([jsoncodec.dumps(trade_body("A-1")), b"{not json",
                       jsoncodec.dumps(trade_body("A-2"))])
    resp = await client.post("/v1/trades/batch", data=body,
                             headers={**a, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    m = await scrape(client)
    assert value(m, "kevin_submissions_total", result="created") == 2
    assert value(m, "kevin_submissions_total", result="invalid") == 1


async def test_a_batch_is_counted_from_its_lines_not_from_its_answer(client, banks,
                                                                     monkeypatch):
    # The answer is never kept as Python values nor parsed back: its lines are counted
    # as it is written (request[LINES]).
    from kevin import jsoncodec
    from kevin.api import metrics

    def refused(*args: object) -> None:
        raise AssertionError("a batch's answer was counted from its body")

    a, b = banks
    mirror = {"counterparty": "BANKA", "side": "buy", "attributes": {}}
    for trade in (trade_body("A-1"), trade_body("A-2", price="2000")):
        assert (await client.post("/v1/trades", json=trade, headers=a)).status == 201
    monkeypatch.setattr(metrics.Metrics, "observe_outcome", refused)
    body = b"\n".join([jsoncodec.dumps(trade_body("B-1", **mirror)), b"{not json",
                       jsoncodec.dumps(trade_body("B-2", price="2001", **mirror)),
                       jsoncodec.dumps(trade_body("B-1", **mirror))])
    resp = await client.post("/v1/trades/batch", data=body,
                             headers={**b, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    assert [line["result"] for line in (await resp.json())["results"]] == [
        "created", "invalid", "created", "exists"]
    m = await scrape(client)
    assert value(m, "kevin_submissions_total", result="invalid") == 1
    assert value(m, "kevin_submissions_total", result="exists") == 1
    assert value(m, "kevin_matches_total", kind="auto") == 1
    assert value(m, "kevin_mismatches_total") == 1


async def test_open_sse_streams_are_counted(client, banks):
    a, _ = banks
    resp = await client.get("/v1/feed", headers={**a, "Accept": "text/event-stream"})
    assert resp.status == 200
    try:
        assert value(await scrape(client), "kevin_feed_sse_streams") == 1
    finally:
        resp.close()


def test_a_batch_counts_its_matches_and_mismatches_with_one_increment_each(monkeypatch):
    m = Metrics()
    increments: list[float] = []
    for counter in (m.matches.labels("auto"), m.mismatches):
        original = counter.inc
        monkeypatch.setattr(counter, "inc",
                            lambda amount=1, _original=original: (increments.append(amount),
                                                                  _original(amount)))
    matched = {"status": "matched", "reason": "matched"}
    m.observe_outcome(("POST", "/v1/trades/batch"), 200, {"results": [
        *({"line": n, "result": "created", "trade": matched} for n in range(1, 4)),
        {"line": 4, "result": "created", "trade": {"status": "mismatched"}},
        {"line": 5, "result": "exists", "trade": matched},
        {"line": 6, "result": "amended", "trade": {"status": "mismatched"}},
        {"line": 7, "result": "created", "trade": {"status": "matched", "reason": "forced"}},
    ]})
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(m.exposition().decode())
               for s in f.samples}
    assert samples[("kevin_matches_total", (("kind", "auto"),))] == 3
    assert samples[("kevin_mismatches_total", ())] == 2
    assert sorted(increments) == [2, 3]
