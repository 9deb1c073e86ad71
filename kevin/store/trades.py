"""The trade store: appends versions, flips `latest`, reads history. The only module
(with its siblings in kevin.store) that speaks SQL; driver errors become domain errors
here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from kevin import jsoncodec
from kevin.domain.errors import VersionConflict
from kevin.domain.models import (
    AcceptedDifference,
    MatchRef,
    Mismatch,
    MismatchField,
    RulesRef,
    Trade,
    trusted,
)
from kevin.domain.queries import PageQuery
from kevin.domain.versions import NewVersion as NewVersion
from kevin.domain.versions import next_version as next_version
from kevin.store import queries as q

# queries.VERSION_COLUMNS by name: version_args builds its tuple in this order (a bulk
# write builds tens of thousands; a mapping taken apart by name cost a fifth of a batch's
# statement rows), and refuses to load if the columns ever move.
_VERSION_ORDER = (
    "participant", "trade_id", "version", "status", "reason", "counterparty", "side",
    "product", "quantity", "price", "currency", "trade_date", "settlement_date", "location",
    "attributes", "match_id", "match_counterparty_trade_id", "match_counterparty_version",
    "mismatches", "rules_version", "comment", "replay_id", "actor", "first_submitted_at",
)
if tuple(name for name, _ in q.VERSION_COLUMNS) != _VERSION_ORDER:
    raise RuntimeError("queries.VERSION_COLUMNS changed: update trades.version_args")


def version_args(new: NewVersion, stored: dict[int, Any] | None = None,
                 *more: Any) -> tuple[Any, ...]:
    """A version's columns (queries.VERSION_COLUMNS), in that order, then ``more`` (a
    statement's own columns after them). ``stored``: a cache of the attributes' column
    values by the identity of the attributes object, for a caller writing many versions
    at once (those of one trade share their attributes); it must keep those objects
    alive while it uses the cache."""
    t, m = new.terms, new.match
    attributes = t.attributes
    column: dict[str, Any] | str | None = attributes
    if attributes and stored is None:
        column = stored_attributes(attributes)
    elif attributes and stored is not None:
        column = stored.get(id(attributes))
        if column is None:
            column = stored[id(attributes)] = stored_attributes(attributes)
    return (new.participant, new.trade_id, new.version, new.status, new.reason,
            t.counterparty, t.side, t.product, t.quantity, t.price, t.currency, t.trade_date,
            t.settlement_date, t.location, column,
            m.match_id if m else None, m.counterparty_trade_id if m else None,
            m.counterparty_version if m else None, stored_mismatches(new), new.rules_version,
            new.comment, new.replay_id, new.actor, new.first_submitted_at, *more)


# Where APPEND_VERSIONS takes jsonb as text (see there), by column name.
_JSONB_COLUMNS = [i for i, (_, type_) in enumerate(q.VERSION_COLUMNS) if type_ == "jsonb"]


def stored_attributes(attributes: dict[str, Any]) -> dict[str, Any] | str:
    """What the jsonb column ``attributes`` holds (kevin.jsoncodec.for_jsonb): the object,
    or its JSON text when it holds a number jsonb would not give back as written."""
    return jsoncodec.for_jsonb(attributes)


def attributes_of(stored: dict[str, Any] | str) -> dict[str, Any]:
    """The attributes as submitted, from the column (see stored_attributes)."""
    return jsoncodec.from_jsonb(stored)


def stored_mismatches(new: NewVersion) -> list[dict[str, Any]]:
    """The ``mismatches`` column: a mismatched version's nearest candidates; a matched
    version's one entry on its counterparty — what decided the match (``rules``) and the
    differences both sides accepted (``fields``, an agreement) — when it has either."""
    m = new.match
    if m is None:
        return [x.model_dump(mode="json") for x in new.mismatches]
    if m.rules is None and not m.accepted_differences:
        return [x.model_dump(mode="json") for x in new.mismatches]
    entry: dict[str, Any] = {
        "counterparty_trade_id": m.counterparty_trade_id,
        "fields": [{**d.model_dump(), "tolerance": None}
                   for d in m.accepted_differences or ()]}
    if m.rules is not None:  # its model_dump, at a tenth of the cost (a batch writes many)
        rules = m.rules
        entry["rules"] = {"kind": rules.kind, "name": rules.name, "version": rules.version}
    return [entry]


def _uuid(value: UUID | None) -> UUID | None:
    """asyncpg's own UUID type as the standard one (which the JSON writer knows)."""
    return None if value is None else UUID(int=value.int)


def _rules_ref(stored: dict[str, Any] | None) -> RulesRef | None:
    return None if stored is None else trusted(RulesRef, dict(stored))


def trade_from_row(row: Mapping[str, Any]) -> Trade:
    """A stored row as a Trade. Not validated again (models.trusted): the row was
    written from a validated model and the table's constraints hold it, and validating
    every row read was the largest Python cost of bulk submission in the profile."""
    match = None
    stored_mismatches = row["mismatches"]
    if row["match_id"] is not None:
        # A matched version keeps no mismatch list; one that an accepted proposal wrote
        # keeps there the differences both sides accepted (kevin.engine.agreements).
        accepted = rules = None
        if stored_mismatches:
            details = stored_mismatches[0]
            accepted = accepted_differences(details["fields"])
            rules = _rules_ref(details.get("rules"))
            stored_mismatches = []
        match = trusted(MatchRef, {
            "match_id": _uuid(row["match_id"]),
            "counterparty_trade_id": row["match_counterparty_trade_id"],
            "counterparty_version": row["match_counterparty_version"],
            "accepted_differences": accepted, "rules": rules,
        })
    return trusted(Trade, {
        "counterparty": row["counterparty"], "side": row["side"], "product": row["product"],
        "quantity": row["quantity"], "price": row["price"], "currency": row["currency"],
        "trade_date": row["trade_date"], "settlement_date": row["settlement_date"],
        "location": row["location"], "attributes": attributes_of(row["attributes"]),
        "trade_id": row["trade_id"], "participant": row["participant"],
        "version": row["version"], "status": row["status"], "match": match,
        "mismatches": mismatches_of(stored_mismatches, _rules_ref),
        "reason": row["reason"], "comment": row["comment"],
        "recorded_at": row["recorded_at"], "actor": row["actor"],
        "first_submitted_at": row["first_submitted_at"],
        "rules_version": row["rules_version"], "replay_id": _uuid(row["replay_id"]),
    })


def accepted_differences(stored: list[dict[str, Any]]) -> list[AcceptedDifference] | None:
    """A matched version's accepted differences, from its ``mismatches`` entry."""
    return [trusted(AcceptedDifference, {
        "field": f["field"], "ours": f["ours"], "theirs": f["theirs"]})
        for f in stored] or None


def mismatches_of(stored: list[dict[str, Any]],
                  rules_ref: Callable[[dict[str, Any] | None], RulesRef | None]
                  ) -> list[Mismatch]:
    """An unmatched version's mismatch list, from its ``mismatches`` column; each
    entry's ``rules`` as ``rules_ref`` reads them."""
    return [trusted(Mismatch, {
        "counterparty_trade_id": m["counterparty_trade_id"],
        "fields": [trusted(MismatchField, dict(f)) for f in m["fields"]],
        "rules": rules_ref(m.get("rules"))})
        for m in stored]


async def insert_version(conn: asyncpg.Connection, new: NewVersion) -> Trade | None:
    """Insert a version (and its feed row). None if that (trade, version) already exists."""
    row = await conn.fetchrow(q.INSERT_VERSION, *version_args(new))
    return trade_from_row(row) if row is not None else None


def _columns(news: Sequence[NewVersion]) -> list[list[Any]]:
    """APPEND_VERSIONS's parameters: one array per column (jsonb as text, see there)."""
    columns = [list(column) for column in zip(*(version_args(new) for new in news), strict=True)]
    for index in _JSONB_COLUMNS:
        columns[index] = [jsoncodec.dumps_str(value) for value in columns[index]]
    return columns


async def append_versions(conn: asyncpg.Connection, news: Sequence[NewVersion],
                          timeout: float | None = None) -> list[Trade]:
    """Write each new version against the version before it (invariant 3), all in one
    round trip; returned in the order given.

    Raises VersionConflict (naming the first trade that lost) when another writer got to
    any of them first; nothing of the statement is then kept by a caller that lets the
    error end its transaction (or savepoint).
    """
    if not news:
        return []
    rows = await conn.fetch(q.APPEND_VERSIONS, *_columns(news), timeout=timeout)
    if len(rows) == len(news):
        written = {(r["participant"], r["trade_id"]): trade_from_row(r) for r in rows}
        return [written[(new.participant, new.trade_id)] for new in news]
    done = {(r["participant"], r["trade_id"]) for r in rows}
    lost = next(new for new in news if (new.participant, new.trade_id) not in done)
    current = await latest(conn, lost.participant, lost.trade_id)
    raise VersionConflict(current.version if current else lost.version - 1, lost.version - 1)


async def append_version(conn: asyncpg.Connection, derived_from: Trade, **changes: Any) -> Trade:
    """Write version n+1 of a trade against version n (invariant 3).

    Raises VersionConflict when another writer got there first. Unspecified fields carry
    over from ``derived_from`` except the match state, which each version states anew.
    """
    (written,) = await append_versions(conn, [next_version(derived_from, **changes)])
    return written


async def latest(conn: asyncpg.Connection, participant: str, trade_id: str) -> Trade | None:
    row = await conn.fetchrow(q.SELECT_LATEST, participant, trade_id)
    return trade_from_row(row) if row is not None else None


async def holders(conn: asyncpg.Connection, trade_id: str,
                  participant: str | None) -> list[str]:
    """The participants with a trade ``trade_id`` (only ``participant``, if given)."""
    return [row["name"] for row in await conn.fetch(q.SELECT_HOLDERS, trade_id, participant)]


async def as_of(
    conn: asyncpg.Connection, participant: str, trade_id: str, instant: datetime
) -> Trade | None:
    row = await conn.fetchrow(q.SELECT_AS_OF, participant, trade_id, instant)
    return trade_from_row(row) if row is not None else None


async def versions(conn: asyncpg.Connection, participant: str, trade_id: str) -> list[Trade]:
    return [trade_from_row(r) for r in await conn.fetch(q.SELECT_VERSIONS, participant, trade_id)]


async def page(conn: asyncpg.Connection, query: PageQuery) -> list[Trade]:
    args: list[Any] = [query.participant, query.status, query.product, *query.after, query.limit]
    if query.as_of is None:
        rows = await conn.fetch(q.SELECT_LATEST_PAGE, *args)
    else:
        rows = await conn.fetch(q.SELECT_AS_OF_PAGE, *args, query.as_of)
    return [trade_from_row(r) for r in rows]
