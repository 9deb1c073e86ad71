"""The store's side of replays: the history a replay re-runs, and the replay record.

Replays are an operator's tool, off the hot path: they read every version (hot and
archived, through trade_history) of the trades of the products they replay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from kevin import jsoncodec
from kevin.domain.matching import TradeRef
from kevin.domain.models import MatchRef, RulesRef, Trade, trusted
from kevin.domain.profiles import Profile, ProfileVersion
from kevin.domain.replay import Outcome, ReplayRecord, RulesTimeline, StoredVersion, instant
from kevin.domain.rules import Rules
from kevin.store.profiles import profile_from_row
from kevin.store.trades import accepted_differences, attributes_of, mismatches_of

# Products with any version recorded after the instant (a replay with no rules names).
SELECT_ACTIVE_PRODUCTS = """
SELECT DISTINCT product FROM trade_history WHERE recorded_at > $1 ORDER BY product
"""

# Every version of every trade that ever had a version in one of the products, with the
# transaction that wrote it (the feed row's txid; a version and its feed row are written
# by one statement). The products are closed under ``linked_products`` (a trade amended
# into or out of one of them brings the other product in), so every version of such a
# trade is in one of them and a filter on the product returns each trade's whole
# history — without a first pass over the history to find the trades and a join with
# it, a third of the statement's server time before its first row. A seq scan of the
# history by design: replays are rare and read everything once. In no order:
# ``split_history`` groups the rows by trade and sorts each trade's versions itself, so
# the server has no sort to finish (spilling to disk past work_mem) before its first
# row, and this process decodes rows while the server still scans and joins. When each
# transaction wrote its first version is worked out by ``history`` from these rows: as
# a window over the transaction it cost a second sort of every row, half of the
# statement's time.
# The columns are those of a Trade (not ``latest``: a replay knows a trade's last version
# from its history), in HISTORY_COLUMNS' order, and the jsonb ones as text for
# ``_Reader.version`` to decode: a matched version's one entry (what decided it, the differences
# both sides accepted) is split off by the server, so the client parses no JSON for it
# and reads its ``rules`` from a handful of distinct texts. Quantity and price come as
# text too: only the versions built into Trades need them (about half), and Decimal
# reads the text faster than the driver decodes a numeric. The two instants come as
# microseconds since the epoch (kevin.domain.replay.microseconds): the driver's
# timestamptz decoding, a datetime per value, was half of the fetch's CPU, yet every
# version's instant is only compared and few are built into datetimes.
HISTORY_COLUMNS = (
    "participant", "trade_id", "version", "status", "reason", "counterparty", "side",
    "product", "quantity::text", "price::text", "currency", "trade_date", "settlement_date",
    "location", "attributes::text", "match_id", "match_counterparty_trade_id",
    "match_counterparty_version",
    "CASE WHEN match_id IS NULL THEN mismatches::text END",
    "CASE WHEN match_id IS NOT NULL THEN (mismatches -> 0 -> 'rules')::text END",
    "CASE WHEN match_id IS NOT NULL THEN (mismatches -> 0 -> 'fields')::text END",
    "rules_version", "comment", "replay_id", "actor",
    "(extract(epoch FROM first_submitted_at) * 1000000)::bigint",
    "(extract(epoch FROM recorded_at) * 1000000)::bigint",
)
SELECT_REPLAY_HISTORY = f"""
SELECT {", ".join(HISTORY_COLUMNS)}, coalesce(f.txid::text::bigint, -version) AS txid
FROM trade_history h
LEFT JOIN feed f USING (participant, trade_id, version)
WHERE h.product = ANY($1::text[])
"""  # noqa: S608 (constant column lists only)

SELECT_BROKEN_PAIRS = """
SELECT participant_a, trade_id_a, participant_b, trade_id_b FROM broken_pairs
"""

# Products other than the given ones whose trades can meet trades of the given ones: the
# products of every other version of those trades (amended across products), and of
# their match counterparties (an operator may force a match across products). The caller
# repeats to a fixed point. Written from the other products' side (a semi-join): where
# nothing crosses products, as is usual, the scan finds no other product's row to join
# and the statement costs one pass, not a join of the history with itself.
SELECT_LINKED_PRODUCTS = """
SELECT DISTINCT o.product FROM trade_history o
WHERE o.product <> ALL($1::text[]) AND EXISTS (
    SELECT 1 FROM trade_history t
    WHERE t.participant = o.participant AND t.trade_id = o.trade_id
      AND t.product = ANY($1::text[]))
UNION
SELECT DISTINCT c.product FROM trade_history c
WHERE c.product <> ALL($1::text[]) AND EXISTS (
    SELECT 1 FROM trade_history t
    WHERE t.counterparty = c.participant AND t.match_counterparty_trade_id = c.trade_id
      AND t.product = ANY($1::text[]))
"""

# Every stored version of the rules of the products, oldest first: a replay without
# rules of its own applies at each moment the rules that were in force then.
SELECT_RULES_HISTORY = """
SELECT product, version, body, recorded_at FROM rules
WHERE product = ANY($1::text[])
ORDER BY product, version
"""

INSERT_REPLAY = """
INSERT INTO replays (replay_id, since, rules, profiles, actor, applied)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING replay_id, since, rules, profiles, actor, applied, recorded_at
"""

SELECT_REPLAY = """
SELECT replay_id, since, rules, profiles, actor, applied, recorded_at
FROM replays WHERE replay_id = $1
"""


# A replay reads whole product histories: an operator's job, not a request, so it does not
# live by the pool's per-request statement timeout.
STATEMENT_TIMEOUT = 600.0


async def active_products(conn: asyncpg.Connection, since: datetime) -> list[str]:
    return [r["product"] for r in await conn.fetch(SELECT_ACTIVE_PRODUCTS, since,
                                                             timeout=STATEMENT_TIMEOUT)]


async def history(conn: asyncpg.Connection, products: Sequence[str]) -> list[StoredVersion]:
    """Every version of the trades of ``products``, which ``linked_products`` closed."""
    rows = await conn.fetch(SELECT_REPLAY_HISTORY, list(products), timeout=STATEMENT_TIMEOUT)
    started: dict[int, int] = {}  # each transaction's first version's recorded_at
    for r in rows:
        txid, at = r[-1], r[-2]
        first = started.get(txid)
        if first is None or at < first:
            started[txid] = at
    reader = _Reader()
    return [StoredVersion((r[0], r[1]), r[2], r[4], r[-2], r[-1], started[r[-1]], r, reader)
            for r in rows]


class _Reader:
    """SELECT_REPLAY_HISTORY's rows as Trades, as trade_from_row builds them (not
    validated again: see there), taken by position — the history's VersionSource. The
    few distinct ``rules`` a replay's versions name are decoded once each."""

    def __init__(self) -> None:
        self._rules: dict[object, RulesRef] = {}
        # Each distinct amount's Decimal, built once: a day's trades repeat a few
        # quantities and prices (a Decimal is immutable; a lookup costs a sixth of one).
        self._amounts: dict[str, Decimal] = {}

    def rules_text(self, text: str) -> RulesRef:
        found = self._rules.get(text)
        if found is None:
            found = self._rules[text] = trusted(RulesRef, dict(jsoncodec.loads(text)))
        return found

    def rules(self, stored: dict[str, Any] | None) -> RulesRef | None:
        if stored is None:
            return None
        key = (stored["kind"], stored["name"], stored["version"])
        found = self._rules.get(key)
        if found is None:
            found = self._rules[key] = trusted(RulesRef, dict(stored))
        return found

    @staticmethod
    def outcome(row: asyncpg.Record) -> Outcome:
        """A row's Outcome (kevin.domain.replay.outcome of the Trade ``version`` builds
        from it), read from the columns: a matched version's mismatch list is empty
        (``version``), an unmatched one's decoded as is."""
        mismatches = row[18]
        return (row[3], row[16] if row[15] is not None else None,
                [] if mismatches is None or mismatches == "[]" else [
                    (m["counterparty_trade_id"],
                     [(f["field"], f.get("ours"), f.get("theirs"), f.get("tolerance"))
                      for f in m["fields"]])
                    for m in jsoncodec.loads(mismatches)])

    @staticmethod
    def standing(row: asyncpg.Record) -> tuple[str, str | None, bool]:
        mismatches = row[18]
        return (row[3], row[16] if row[15] is not None else None,
                mismatches is not None and mismatches != "[]")

    def version(self, row: asyncpg.Record) -> Trade:
        (participant, trade_id, version, status, reason, counterparty, side, product,
         quantity, price, currency, trade_date, settlement_date, location, attributes,
         match_id, counterparty_trade_id, counterparty_version, mismatches, match_rules,
         accepted, rules_version, comment, replay_id, actor, first_submitted_us,
         recorded_us, _) = row
        recorded_at = instant(recorded_us)
        first_submitted_at = (recorded_at if first_submitted_us == recorded_us
                              else None if first_submitted_us is None
                              else instant(first_submitted_us))
        amounts = self._amounts
        quantity_amount, price_amount = amounts.get(quantity), amounts.get(price)
        if quantity_amount is None:
            quantity_amount = amounts[quantity] = Decimal(quantity)
        if price_amount is None:
            price_amount = amounts[price] = Decimal(price)
        match = None
        if match_id is not None:
            match = trusted(MatchRef, {
                "match_id": UUID(int=match_id.int),
                "counterparty_trade_id": counterparty_trade_id,
                "counterparty_version": counterparty_version,
                "accepted_differences": (accepted_differences(jsoncodec.loads(accepted))
                                         if accepted is not None and accepted != "[]"
                                         else None),
                "rules": self.rules_text(match_rules) if match_rules is not None else None,
            })
        return trusted(Trade, {
            "counterparty": counterparty, "side": side, "product": product,
            "quantity": quantity_amount, "price": price_amount, "currency": currency,
            "trade_date": trade_date, "settlement_date": settlement_date,
            "location": location,
            "attributes": {} if attributes == "{}" else attributes_of(
                jsoncodec.loads(attributes)),
            "trade_id": trade_id, "participant": participant, "version": version,
            "status": status, "match": match,
            "mismatches": ([] if mismatches is None or mismatches == "[]"
                           else mismatches_of(jsoncodec.loads(mismatches), self.rules)),
            "reason": reason, "comment": comment, "recorded_at": recorded_at, "actor": actor,
            "first_submitted_at": first_submitted_at, "rules_version": rules_version,
            "replay_id": None if replay_id is None else UUID(int=replay_id.int),
        })


async def broken_pairs(conn: asyncpg.Connection) -> list[tuple[TradeRef, TradeRef]]:
    return [((r["participant_a"], r["trade_id_a"]), (r["participant_b"], r["trade_id_b"]))
            for r in await conn.fetch(SELECT_BROKEN_PAIRS, timeout=STATEMENT_TIMEOUT)]


async def linked_products(conn: asyncpg.Connection, products: Sequence[str]) -> list[str]:
    """``products`` and every product their trades can meet, to a fixed point."""
    found = set(products)
    while True:
        more = {r["product"] for r in await conn.fetch(SELECT_LINKED_PRODUCTS, sorted(found),
                                                      timeout=STATEMENT_TIMEOUT)}
        if more <= found:
            return sorted(found)
        found |= more


async def rules_history(conn: asyncpg.Connection, products: Sequence[str]) -> RulesTimeline:
    timeline: RulesTimeline = {}
    for r in await conn.fetch(SELECT_RULES_HISTORY, list(products),
                              timeout=STATEMENT_TIMEOUT):
        timeline.setdefault(r["product"], []).append(
            (r["recorded_at"], r["version"], Rules.model_validate(r["body"])))
    return timeline


# Every version of every profile, oldest first (a small table: agreements between firms).
SELECT_PROFILES_HISTORY = """
SELECT name, version, retired, participant_a, participant_b, product, body, actor,
       recorded_at
FROM profiles
ORDER BY recorded_at, name, version
"""


async def profiles_history(conn: asyncpg.Connection) -> list[ProfileVersion]:
    return [profile_from_row(r) for r in await conn.fetch(SELECT_PROFILES_HISTORY,
                                                          timeout=STATEMENT_TIMEOUT)]


def _record(row: asyncpg.Record) -> ReplayRecord:
    rules, profiles = row["rules"], row["profiles"]
    return ReplayRecord(replay_id=row["replay_id"], since=row["since"],
                        rules=json.loads(rules) if isinstance(rules, str) else rules,
                        profiles=json.loads(profiles) if isinstance(profiles, str) else profiles,
                        actor=row["actor"], applied=row["applied"],
                        recorded_at=row["recorded_at"])


async def record(conn: asyncpg.Connection, replay_id: UUID, since: datetime,
                 rules: Mapping[str, Rules], profiles: Mapping[str, Profile], actor: str,
                 applied: bool) -> ReplayRecord:
    """Keep a replay's record: what it was run with (its rules and profiles, as given),
    who ran it, and whether it was applied."""
    rules_body = {product: r.model_dump(mode="json") for product, r in sorted(rules.items())}
    profiles_body = {name: p.model_dump(mode="json") for name, p in sorted(profiles.items())}
    return _record(await conn.fetchrow(INSERT_REPLAY, replay_id, since, rules_body,
                                       profiles_body, actor, applied))


async def get(conn: asyncpg.Connection, replay_id: UUID) -> ReplayRecord | None:
    row = await conn.fetchrow(SELECT_REPLAY, replay_id)
    return _record(row) if row is not None else None
