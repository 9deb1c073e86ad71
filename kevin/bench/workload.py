"""The trades a benchmark submits: the same ones for the ceiling and for the service.

Pair ``i`` of client ``c`` is a sell by BANKA and the buy by BANKB with identical terms.
Each client works on its own product (match key), as a busy day spreads over many
products and counterparties; the pair's price is unique, so the buy can only match its
own sell and a pair's latency is the latency of that match.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

SELLER = "BANKA"
BUYER = "BANKB"
TRADE_DATE = date(2026, 11, 20)
SETTLEMENT_DATE = date(2026, 11, 24)


def product(client: int, keys: int) -> str:
    return f"BENCH{client % keys}"


def price(client: int, i: int) -> Decimal:
    return Decimal(f"{1000 + client}.{i:06d}")


def pair_terms(run: str, client: int, i: int, keys: int) -> tuple[dict[str, Any], ...]:
    """The sell's and the buy's POST /v1/trades bodies (JSON-ready values)."""
    common = {
        "product": product(client, keys), "quantity": "100",
        "price": format(price(client, i), "f"), "currency": "USD",
        "trade_date": TRADE_DATE.isoformat(), "settlement_date": SETTLEMENT_DATE.isoformat(),
        "location": "LDN", "attributes": {"bench": run},
    }
    sell = {"trade_id": f"{run}-S-{client}-{i}", "counterparty": BUYER, "side": "sell", **common}
    buy = {"trade_id": f"{run}-B-{client}-{i}", "counterparty": SELLER, "side": "buy", **common}
    return sell, buy


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    ordered = sorted(seconds)
    ms = _ms
    return {"p50_ms": ms(percentile(ordered, 0.50)), "p99_ms": ms(percentile(ordered, 0.99)),
            "max_ms": ms(ordered[-1] if ordered else None)}
