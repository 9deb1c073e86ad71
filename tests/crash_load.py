"""HTTP load for the crash test, run as its own process:

    python -m tests.crash_load URL KEY_A KEY_B ACKS_FILE STOP_FILE

Workers submit mirrored pairs (BANKA sells, BANKB buys: they match) and amend some of
BANKA's trades, against a server that is SIGKILLed and restarted under them. A request
that fails (connection refused or reset, 503) is retried with the very same body until
the server answers: submissions are idempotent, so a retry of a write that committed
before the kill comes back 200 with the stored trade. Every acknowledged (2xx) answer is
appended to ACKS_FILE as one JSON line, flushed at once. The load stops when STOP_FILE
exists.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

WORKERS = 4
RETRY_PAUSE = 0.05


class Load:
    def __init__(self, url: str, key_a: str, key_b: str, acks: Path, stop: Path) -> None:
        self.url = url
        self.auth = {"BANKA": {"Authorization": f"Bearer {key_a}"},
                     "BANKB": {"Authorization": f"Bearer {key_b}"}}
        self.acks = acks.open("a", buffering=1)
        self.stop = stop
        self.next = 0

    def stopping(self) -> bool:
        return self.stop.exists()

    async def send(self, session: aiohttp.ClientSession, who: str, method: str, path: str,
                   body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """The request until the server answers it (None if the load is stopping)."""
        while not self.stopping():
            try:
                async with session.request(method, f"{self.url}{path}", json=body,
                                           headers={**self.auth[who], **(headers or {})}) as r:
                    answer = await r.json(content_type=None)
                    if r.status == 503:
                        await asyncio.sleep(RETRY_PAUSE)
                        continue
                    if 200 <= r.status < 300:
                        self.acks.write(json.dumps({"participant": who, "status": r.status,
                                                    "method": method, "trade": answer}) + "\n")
                    return r.status, answer
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                await asyncio.sleep(RETRY_PAUSE)  # the server is down or restarting
        return None

    async def worker(self, n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.stopping():
                self.next += 1
                i = self.next
                a = trade(f"A-{n}-{i}", "BANKB", "sell", i)
                b = trade(f"B-{n}-{i}", "BANKA", "buy", i)
                first = await self.send(session, "BANKA", "POST", "/v1/trades", a)
                await self.send(session, "BANKB", "POST", "/v1/trades", b)
                if first is not None and i % 3 == 0:
                    # An amendment of an unmatched trade of BANKA's: a new version.
                    c = trade(f"C-{n}-{i}", "BANKB", "sell", i, price="7")
                    created = await self.send(session, "BANKA", "POST", "/v1/trades", c)
                    if created is not None and created[0] in (200, 201):
                        version = created[1]["version"]
                        amended = {k: v for k, v in c.items() if k != "trade_id"}
                        amended["quantity"] = "2"
                        await self.send(session, "BANKA", "PUT", f"/v1/trades/{c['trade_id']}",
                                        amended, {"If-Match": f'"{version}"'})

    async def run(self) -> None:
        await asyncio.gather(*(self.worker(n) for n in range(WORKERS)))


def trade(trade_id: str, counterparty: str, side: str, i: int, price: str = "100") -> dict:
    return {"trade_id": trade_id, "counterparty": counterparty, "side": side,
            "product": "XAU", "quantity": "1", "price": price, "currency": "USD",
            "trade_date": "2026-11-20", "settlement_date": "2026-11-24",
            "attributes": {"i": i}}


if __name__ == "__main__":
    url, key_a, key_b, acks, stop = sys.argv[1:6]
    asyncio.run(Load(url, key_a, key_b, Path(acks), Path(stop)).run())
