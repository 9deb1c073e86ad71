"""The store's side of bulk submission: the statements of kevin.store.bulk_queries, each
doing for a whole batch what its single counterpart does for one trade."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, overload

import asyncpg
import orjson

from kevin import jsoncodec
from kevin.domain.errors import VersionConflict
from kevin.domain.matching import TradeRef
from kevin.domain.models import Trade
from kevin.domain.profiles import ProfileVersion
from kevin.domain.rules import RulesVersion
from kevin.store import bulk_queries as q
from kevin.store.matching import MATCH_LOCK_CLASS, MatchKey, _rules_from_row
from kevin.store.named import line_values
from kevin.store.profiles import profile_from_row
from kevin.store.trades import NewVersion, trade_from_row, version_args

# (participant, trade_id, version): one version of one trade.
VersionRef = tuple[str, str, int]


async def lock_match_keys(conn: asyncpg.Connection, keys: Iterable[MatchKey]) -> None:
    """kevin.store.matching.lock_match_keys in one round trip (same ascending order)."""
    lock_ids = sorted({key.lock_id() for key in keys})
    if lock_ids:
        await conn.fetchval(q.LOCK_MATCH_KEYS, MATCH_LOCK_CLASS, lock_ids)


async def open_group(conn: asyncpg.Connection, keys: Iterable[MatchKey],
                     participants: Iterable[str]
                     ) -> tuple[dict[str, RulesVersion], list[ProfileVersion]]:
    """lock_match_keys, then the latest rules of the keys' products and every live
    profile naming one of ``participants``, in one round trip (bulk_queries.OPEN_GROUP)."""
    keys = list(keys)
    rows = await conn.fetch(q.OPEN_GROUP, MATCH_LOCK_CLASS, sorted({k.lock_id() for k in keys}),
                            sorted({k.product for k in keys}), sorted(set(participants)))
    rules = {row["row"]["product"]: _rules_from_row(row["row"])
             for row in rows if row["kind"] == "rules"}
    profiles = [profile_from_row(row["row"]) for row in rows if row["kind"] == "profile"]
    return rules, profiles


async def latest_rules(conn: asyncpg.Connection,
                       products: Iterable[str]) -> dict[str, RulesVersion]:
    rows = await conn.fetch(q.SELECT_LATEST_RULES_MANY, sorted(set(products)))
    return {row["product"]: _rules_from_row(row) for row in rows}


async def latest_many(conn: asyncpg.Connection, participant: str,
                      trade_ids: Iterable[str]) -> dict[str, Trade]:
    ids = list(trade_ids)
    if not ids:
        return {}
    rows = await conn.fetch(q.SELECT_LATEST_MANY, participant, ids)
    return {row["trade_id"]: trade_from_row(row) for row in rows}


async def broken_among(conn: asyncpg.Connection,
                       participants: Iterable[str]) -> set[frozenset[TradeRef]]:
    rows = await conn.fetch(q.SELECT_BROKEN_AMONG, sorted(set(participants)))
    return {frozenset(((r["participant_a"], r["trade_id_a"]),
                       (r["participant_b"], r["trade_id_b"]))) for r in rows}


class Rows(Sequence[NewVersion]):
    """Versions with their statement's parameters already written as JSON (``params``):
    a batch builds the next write's rows while PostgreSQL writes the statement before,
    and sends it the moment the connection is free (``written_rows``). Read as the
    versions themselves; ``latest``: each trade's version once they are written."""

    __slots__ = ("latest", "params", "versions")

    def __init__(self, versions: Sequence[NewVersion], latest: dict[TradeRef, int],
                 *params: orjson.Fragment | int) -> None:
        self.versions = versions
        self.latest = latest
        self.params = params

    def __len__(self) -> int:
        return len(self.versions)

    @overload
    def __getitem__(self, index: int) -> NewVersion: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[NewVersion]: ...
    def __getitem__(self, index: int | slice) -> NewVersion | Sequence[NewVersion]:
        return self.versions[index]

    def __iter__(self) -> Iterator[NewVersion]:
        return iter(self.versions)


async def first_submissions(conn: asyncpg.Connection, news: Sequence[NewVersion]
                            ) -> dict[TradeRef, datetime]:
    """When each of ``news`` (version 1 of a new trade), in order, is first submitted:
    the database's clock, line after line. One whose trade_id is taken already (another
    writer created it meanwhile) is left out. Nothing is written (write_versions writes
    each version 1 with the versions derived from it)."""
    if not news:
        return {}
    rows = await conn.fetch(q.FIRST_SUBMISSIONS, [(new.participant, new.trade_id)
                                                  for new in news])
    return {(row["participant"], row["trade_id"]): row["first_submitted_at"]
            for row in rows if not row["taken"]}


async def first_submissions_and_broken(
        conn: asyncpg.Connection, news: Sequence[NewVersion], participants: Iterable[str]
        ) -> tuple[dict[TradeRef, datetime], set[frozenset[TradeRef]]]:
    """first_submissions(``news``) and broken_among(``participants``) in one round trip
    (bulk_queries.FIRST_SUBMISSIONS_AND_BROKEN): to be called under the match-key locks,
    which the broken pairs are read under. Nothing is written."""
    rows = await conn.fetch(q.FIRST_SUBMISSIONS_AND_BROKEN,
                            [(new.participant, new.trade_id) for new in news],
                            sorted(set(participants)))
    firsts = {(r["participant"], r["trade_id"]): r["first_submitted_at"]
              for r in rows if r["kind"] == "first" and not r["taken"]}
    broken = {frozenset(((r["participant"], r["trade_id"]),
                         (r["participant_b"], r["trade_id_b"])))
              for r in rows if r["kind"] == "broken"}
    return firsts, broken


def written_rows(versions: Sequence[NewVersion], stored: Mapping[TradeRef, int]) -> Rows:
    """write_versions' parameters for ``versions`` and ``stored`` (read once for each
    trade, before anything else), built now. One pass over the versions for their trades
    and one to write them: a batch builds tens of thousands."""
    last: dict[TradeRef, int] = {}
    for index, new in enumerate(versions):
        last[(new.participant, new.trade_id)] = index
    flips = []
    latest = [False] * len(versions)
    versions_written: dict[TradeRef, int] = {}
    for key, index in last.items():
        if stored[key]:
            flips.append((*key, stored[key]))
        latest[index] = True
        versions_written[key] = versions[index].version
    attributes: dict[int, Any] = {}
    lines = [version_args(new, attributes, is_latest)
             for new, is_latest in zip(versions, latest, strict=True)]
    return Rows(versions, versions_written, orjson.Fragment(jsoncodec.dumps(flips)),
                orjson.Fragment(jsoncodec.dumps(lines)), len(flips))


async def write_versions(conn: asyncpg.Connection, versions: Sequence[NewVersion],
                         stored: Mapping[TradeRef, int]) -> dict[VersionRef, datetime]:
    """Every version in order, each trade's last one latest, after flipping the version
    each trade has in the database (``stored``; 0: none, its version 1 is among
    ``versions``) — one round trip however many. Raises VersionConflict if another
    writer moved one of those trades first (and the database a unique violation if
    another created one of the new ones). Returns the recorded_at of every version
    written, by (participant, trade_id, version). ``versions`` may be Rows
    (written_rows) built before, ``stored`` in them already."""
    if not versions:
        return {}
    rows = versions if isinstance(versions, Rows) else written_rows(versions, stored)
    answer = await conn.fetch(q.WRITE_VERSIONS, *rows.params)
    if len(answer) != len(versions):  # a flip missed: none was inserted
        raise VersionConflict(-1, -1)  # which one does not matter: the batch is undone
    return {(r["participant"], r["trade_id"], r["version"]): r["recorded_at"]
            for r in answer}


SegmentKey = tuple[str, str, str, str, str, object]
# (segment, from_price, inclusive, above): a window of a segment from a price outwards.
Window = tuple[SegmentKey, Decimal, bool, bool]
# (segment, low, high): every resting trade of a segment priced within [low, high].
Span = tuple[SegmentKey, Decimal, Decimal]
_INFINITY = Decimal("Infinity")


async def resting_counts(conn: asyncpg.Connection, spans: Sequence[Span],
                         caps: Sequence[int]) -> list[int]:
    """How many resting trades each span holds, counted up to its cap only."""
    segment_names = [name for name, _ in q.COUNT_LINE[:6]]
    rows = await conn.fetch(q.COUNT_RESTING, [line_values(q.COUNT_LINE, {
        **dict(zip(segment_names, segment, strict=True)), "low": low, "high": high,
        "cap": cap}) for (segment, low, high), cap in zip(spans, caps, strict=True)])
    counts = {row["line_ord"]: row["resting"] for row in rows}
    return [counts[n] for n in range(1, len(spans) + 1)]


# Up to this many windows (a group commit's few writes ask two each) are read in one
# round trip, each window's rows on their own (bulk_queries.WINDOWS_WHOLE); more in two,
# the windows merged into ranges first so that each trade is read once (a batch's).
FEW_WINDOWS = 16


async def _few_windows(conn: asyncpg.Connection, requests: Sequence[Window],
                       unique: Sequence[Window], lines: Sequence[Any], size: int
                       ) -> tuple[list[Decimal | None], list[asyncpg.Record]]:
    """``windows`` for a few, in one round trip: a trade in two windows comes twice."""
    rows = await conn.fetch(q.WINDOWS_WHOLE, lines)
    found: dict[int, list[Decimal]] = {}
    for row in rows:
        found.setdefault(row["line_ord"], []).append(row["price"])
    edge_of: dict[Window, Decimal | None] = {}
    for ord_, window in enumerate(unique, start=1):
        prices = found.get(ord_, [])
        # The last price of a full window (ties included), as WINDOW_EDGES gives it.
        edge_of[window] = (max(prices) if window[3] else min(prices)) \
            if len(prices) >= size else None
    return [edge_of[window] for window in requests], rows


async def windows(conn: asyncpg.Connection, requests: Sequence[Window], size: int,
                  spans: Sequence[Span] = ()) -> tuple[list[Decimal | None],
                                                       list[asyncpg.Record]]:
    """Each window's edge (bulk_queries, WINDOW_EDGES), and the resting trades of all
    the windows and ``spans``, each once: the same window asked twice is read once, and
    overlapping windows and spans of a segment are read as one range."""
    if not requests and not spans:
        return [], []
    unique = list(dict.fromkeys(requests))
    segment_names = [name for name, _ in q.EDGE_LINE[:6]]
    edge_lines = [line_values(q.EDGE_LINE, {
        **dict(zip(segment_names, segment, strict=True)), "from_price": price,
        "inclusive": inclusive, "above": above, "size": size})
        for segment, price, inclusive, above in unique]
    if not spans and len(unique) <= FEW_WINDOWS:
        return await _few_windows(conn, requests, unique, edge_lines, size)
    edge_of: dict[Window, Decimal | None] = {}
    if unique:
        for row in await conn.fetch(q.WINDOW_EDGES, edge_lines):
            edge_of[unique[row["line_ord"] - 1]] = row["edge"]
    ranges: dict[SegmentKey, list[tuple[Decimal, Decimal]]] = {}
    for segment, low, high in spans:
        ranges.setdefault(segment, []).append((low, high))
    for window in unique:
        segment, price, _, above = window
        edge = edge_of[window]
        low = price if above else (-_INFINITY if edge is None else edge)
        high = (_INFINITY if edge is None else edge) if above else price
        ranges.setdefault(segment, []).append((low, high))
    lines = []
    for segment, parts in ranges.items():
        merged: list[tuple[Decimal, Decimal]] = []
        for low, high in sorted(parts):
            if merged and low <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        lines += [line_values(q.RANGE_LINE, {
            **dict(zip(segment_names, segment, strict=True)),
            "low": None if low.is_infinite() else low,
            "high": None if high.is_infinite() else high}) for low, high in merged]
    return [edge_of[window] for window in requests], list(await conn.fetch(q.WINDOW_TRADES,
                                                                          lines))
