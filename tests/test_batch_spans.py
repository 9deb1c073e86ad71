"""A batch whose lines crowd one segment reads it whole between their lowest and highest
price, with one window beyond each end (kevin.store.batch_book, DENSE_PRICES), instead of
two windows a line — and matches exactly as single submissions do, whether or not the
segment was sparse enough to be read that way."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kevin.store import batch_book, bulk
from tests.conftest import ADMIN, trade_body
from tests.matching_checks import check_matching_invariants
from tests.support import book_state
from tests.test_batch_api import batch

LINES = 40  # buys, at or above batch_book.DENSE_PRICES


def price(k: int) -> Decimal:
    return Decimal("100.00") + Decimal("2.50") * k


def sells(cp: str, crowded: bool) -> list[dict[str, Any]]:
    """Resting sells: beyond both ends of the buys' prices the best counterparts of the
    first and the last buy; between them exact, near and too-far ones, ties included;
    ``crowded``: many more between them than the batch has lines."""
    found = [trade_body("S-L", counterparty=cp, price="99.70"),  # 0.30 below B-0
             trade_body("S-H", counterparty=cp, price=str(price(LINES - 1) + Decimal("0.30")))]
    for k in range(1, LINES - 1, 3):
        offset = (Decimal("0"), Decimal("0.20"), Decimal("0.90"))[k % 3]
        found += [trade_body(f"S-{k}", counterparty=cp, price=str(price(k) + offset)),
                  trade_body(f"S-{k}t", counterparty=cp, price=str(price(k) + offset),
                             quantity="100")]
    if crowded:
        found += [trade_body(f"S-{k}x{i}", counterparty=cp,
                             price=str(price(k) + Decimal("1.20") + Decimal("0.05") * i))
                  for k in range(LINES - 1) for i in range(6)]
    return found


def buys(cp: str) -> list[dict[str, Any]]:
    return [trade_body(f"B-{k}", counterparty=cp, side="buy", attributes={},
                       price=str(price(k))) for k in range(LINES)]


@pytest.mark.parametrize("crowded", [False, True], ids=["sparse", "crowded"])
async def test_a_crowded_batch_matches_as_single_submissions_do(
        client, api, conn, monkeypatch, crowded: bool) -> None:
    heads = {name: await api.participant(name) for name in ("BANKA", "BANKB", "BANKC",
                                                             "BANKD")}
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"}},
                            headers=ADMIN)
    assert resp.status == 200
    for body in sells("BANKB", crowded):
        resp = await client.post("/v1/trades", json=body, headers=heads["BANKA"])
        assert resp.status == 201, await resp.text()
    for body in buys("BANKA"):
        resp = await client.post("/v1/trades", json=body, headers=heads["BANKB"])
        assert resp.status == 201, await resp.text()

    counted: list[tuple[list[int], list[int]]] = []
    resting_counts = bulk.resting_counts

    async def spy(conn_, spans, caps):  # noqa: ANN001, ANN202 - the wrapped function's
        counts = await resting_counts(conn_, spans, caps)
        counted.append((counts, list(caps)))
        return counts

    monkeypatch.setattr(bulk, "resting_counts", spy)
    await batch(client, heads["BANKC"], *sells("BANKD", crowded))
    counted.clear()
    result = await batch(client, heads["BANKD"], *buys("BANKC"))
    assert [r["result"] for r in result["results"]] == ["created"] * LINES
    # The buys' opposite segment was counted first; read whole only where it was sparse.
    assert batch_book.DENSE_PRICES <= LINES
    [count], [cap] = counted[0]
    assert (count < cap) is not crowded

    assert await book_state(conn, "BANKC") == await book_state(conn, "BANKA")
    assert await book_state(conn, "BANKD") == await book_state(conn, "BANKB")
    matched = await book_state(conn, "BANKD")
    assert matched["B-0"][1:3] == ("matched", "S-L")
    assert matched[f"B-{LINES - 1}"][1:3] == ("matched", "S-H")
    assert {v[1] for v in matched.values()} == {"matched", "mismatched"}
    await check_matching_invariants(conn)
