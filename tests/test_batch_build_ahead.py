"""A batch builds the rows of its next statement while PostgreSQL writes the one in
flight (kevin.store.batch_book, ``_build_ahead``) and sends them as built the moment the
connection is free: the batch still ends as single submissions would leave it."""

from __future__ import annotations

from typing import Any

from kevin.store import batch_book, bulk
from tests.conftest import trade_body
from tests.matching_checks import check_matching_invariants
from tests.test_batch_api import batch, buy


async def test_the_next_statement_is_built_while_one_is_in_flight(client, banks, conn,
                                                                  monkeypatch):
    monkeypatch.setattr(batch_book, "WRITE_BEHIND", 2)
    monkeypatch.setattr(batch_book, "YIELD_EVERY", 1)
    monkeypatch.setattr(batch_book, "FIRST_VERSIONS", 3)
    in_flight = [0]
    built: list[tuple[bulk.Rows, int]] = []  # the rows, and the statements in flight then
    given: dict[str, list[int | None]] = {"write_versions": []}

    def builder(name: str) -> Any:
        original = getattr(bulk, name)

        def build(*args: Any) -> bulk.Rows:
            rows = original(*args)
            built.append((rows, in_flight[0]))
            return rows
        return build

    def statement(name: str) -> Any:
        original = getattr(bulk, name)

        async def send(conn: Any, versions: Any, *rest: Any) -> Any:
            # Rows built before the call: how many statements were in flight meanwhile.
            given[name].append(next((flying for rows, flying in built if rows is versions),
                                    None))
            in_flight[0] += 1
            try:
                return await original(conn, versions, *rest)
            finally:
                in_flight[0] -= 1
        return send

    monkeypatch.setattr(bulk, "written_rows", builder("written_rows"))
    for name in given:
        monkeypatch.setattr(bulk, name, statement(name))
    a, b = banks
    sells = await batch(client, a, *(trade_body(f"A-{i}", price=f"{1000 + i}.5")
                                     for i in range(12)))
    assert {r["trade"]["status"] for r in sells["results"]} == {"unmatched"}
    buys = await batch(client, b, *(buy(f"B-{i}", price=f"{1000 + i}.5") for i in range(12)))
    for i, result in enumerate(buys["results"]):
        assert result["trade"]["status"] == "matched"
        assert result["trade"]["match"]["counterparty_trade_id"] == f"A-{i}"
    # Writes went with rows built while another statement was written (the new trades'
    # versions 1 among them: a part of the first submissions is built when sent).
    assert any(flying for flying in given["write_versions"] if flying), given
    assert await check_matching_invariants(conn) == 12
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 48
