"""A batch answers each line's trade with ``plain_dump``, built by hand: its JSON must be
byte for byte the trade's ``model_dump`` as jsoncodec writes it, whatever the trade
holds — every status and reason, a match with or without rules and accepted
differences, mismatches, attributes with the numbers only jsoncodec writes back (``-0``,
``1e99``), amounts in any exponent, instants in any zone, year and microsecond."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, get_args

from asyncpg.pgproto import pgproto
from hypothesis import given, settings
from hypothesis import strategies as st

from kevin import jsoncodec
from kevin.domain.models import (
    AcceptedDifference,
    AgedTrade,
    MatchRef,
    Mismatch,
    MismatchField,
    Reason,
    RulesRef,
    Status,
    Trade,
    plain_dump,
    trusted,
)
from tests.test_plain_submission import _validation_of

_TEXT = st.text(max_size=6)
_AMOUNTS = st.one_of(
    st.decimals(min_value=Decimal("0.000000000000000001"), max_value=Decimal("1e20"),
                allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("1E+2"), Decimal("100.000"), Decimal("1e-18"), Decimal("5E+3")]))
_ZONES = st.sampled_from([UTC, timezone(timedelta(0)),
                          timezone(timedelta(hours=5, minutes=30)),
                          timezone(timedelta(hours=-11))])
_INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=_ZONES),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=st.just(UTC)).map(lambda v: v.replace(microsecond=0)))
_IDS = st.one_of(st.uuids(), st.uuids().map(lambda u: pgproto.UUID(u.bytes)))
_ATTRIBUTE_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), _TEXT, st.integers(-(2**63), 2**64 - 1),
              st.decimals(allow_nan=False, allow_infinity=False, places=4),
              st.sampled_from(["-0", "-0.0", "1e99", "1E-7"]).map(jsoncodec.JsonNumber)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=8)
_RULES = st.builds(RulesRef, kind=st.sampled_from(["profile", "product", "exact", "replay"]),
                   name=_TEXT, version=st.none() | st.integers(0, 99))
_DIFFERENCES = st.lists(st.builds(AcceptedDifference, field=_TEXT, ours=st.none() | _TEXT,
                                  theirs=st.none() | _TEXT), max_size=2)
_MATCHES = st.builds(MatchRef, match_id=_IDS, counterparty_trade_id=_TEXT,
                     counterparty_version=st.integers(1, 9),
                     accepted_differences=st.none() | _DIFFERENCES,
                     rules=st.none() | _RULES)
_MISMATCHES = st.lists(st.builds(
    Mismatch, counterparty_trade_id=_TEXT, rules=st.none() | _RULES,
    fields=st.lists(st.builds(MismatchField, field=_TEXT, ours=st.none() | _TEXT,
                              theirs=st.none() | _TEXT, tolerance=st.none() | _TEXT),
                    max_size=2)), max_size=2)


@st.composite
def trades(draw: st.DrawFn) -> Trade:
    """A stored version as the store and the engine build it (``trusted``)."""
    return trusted(Trade, {
        "counterparty": draw(_TEXT), "side": draw(st.sampled_from(["buy", "sell"])),
        "product": draw(_TEXT), "quantity": draw(_AMOUNTS), "price": draw(_AMOUNTS),
        "currency": draw(_TEXT), "trade_date": draw(st.dates(date(1, 1, 1))),
        "settlement_date": draw(st.dates(date(1, 1, 1))),
        "location": draw(st.none() | _TEXT),
        "attributes": draw(st.dictionaries(_TEXT, _ATTRIBUTE_VALUES, max_size=3)),
        "trade_id": draw(_TEXT), "participant": draw(_TEXT), "version": draw(st.integers(1, 9)),
        "status": draw(st.sampled_from(get_args(Status))),
        "match": draw(st.none() | _MATCHES), "mismatches": draw(_MISMATCHES),
        "reason": draw(st.sampled_from(get_args(Reason))), "comment": draw(st.none() | _TEXT),
        "recorded_at": draw(_INSTANTS), "actor": draw(st.none() | _TEXT),
        "first_submitted_at": draw(st.none() | _INSTANTS),
        "rules_version": draw(st.none() | st.integers(0, 9)),
        "replay_id": draw(st.none() | st.uuids()),
    })


def _json(values: dict[str, Any]) -> bytes:
    return jsoncodec.dumps(values)


@settings(max_examples=800, deadline=None)
@given(trades())
def test_a_trade_dumps_to_the_bytes_of_its_model_dump(trade: Trade) -> None:
    assert _json(plain_dump(trade)) == _json(trade.model_dump(mode="python"))


def test_the_cases_orjson_would_write_otherwise_are_covered() -> None:
    # Instants without microseconds, before year 1000 or not in UTC; asyncpg's UUID.
    match = MatchRef(match_id=pgproto.UUID(uuid.uuid4().bytes), counterparty_trade_id="B-1",
                     counterparty_version=2, rules=RulesRef(kind="exact", name="X",
                                                            version=None))
    for recorded_at in (datetime(2026, 11, 20, 10, tzinfo=UTC),
                        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
                        datetime(2026, 11, 20, 10, 0, 0, 7, tzinfo=timezone(timedelta(hours=1))),
                        datetime(2026, 11, 20, 10, 0, 0, 7, tzinfo=timezone(timedelta(0))),
                        datetime(2026, 11, 20, 10, 0, 0, 7, tzinfo=UTC)):
        trade = trusted(Trade, {**_BASE, "recorded_at": recorded_at, "match": match})
        assert _json(plain_dump(trade)) == _json(trade.model_dump(mode="python"))
    assert b'"recorded_at":"2026-11-20T10:00:00.000000Z"' in _json(plain_dump(
        trusted(Trade, {**_BASE, "recorded_at": datetime(2026, 11, 20, 10, tzinfo=UTC)})))


def test_a_subclass_of_trade_keeps_its_own_fields() -> None:
    aged = trusted(AgedTrade, {**_BASE, "cutoff_at": datetime(2026, 11, 24, tzinfo=UTC),
                               "overdue": True})
    assert plain_dump(aged)["overdue"] is True
    assert _json(plain_dump(aged)) == _json(aged.model_dump(mode="python"))


_BASE: dict[str, Any] = {
    "counterparty": "BANKB", "side": "sell", "product": "XAU", "quantity": Decimal("100"),
    "price": Decimal("1000.25"), "currency": "USD", "trade_date": date(2026, 11, 20),
    "settlement_date": date(2026, 11, 24), "location": "LDN", "attributes": {"n": 1},
    "trade_id": "A-1", "participant": "BANKA", "version": 1, "status": "unmatched",
    "match": None, "mismatches": [], "reason": "submitted", "comment": None,
    "recorded_at": datetime(2026, 11, 20, 10, 0, 0, 1, tzinfo=UTC), "actor": "BANKA",
    "first_submitted_at": None, "rules_version": None, "replay_id": None}


# The serialization plain_dump was written to mirror. A field, a serializer or an
# exclusion added to Trade (or to the models it holds) changes it: plain_dump must learn
# the change too, then this fingerprint follows. (A pydantic upgrade that changes the
# schema it builds lands here as well: worth the look.)
MIRRORED_SCHEMA = "3b6c7101a35c1832aebbe5528ea522bd5111b14dba059773fe72426e13613bc8"


def test_plain_dump_mirrors_the_models_serialization_as_it_is() -> None:
    fingerprint = hashlib.sha256(_validation_of(Trade).encode()).hexdigest()
    assert fingerprint == MIRRORED_SCHEMA, (
        "Trade serializes differently from what plain_dump mirrors: update plain_dump, "
        "then MIRRORED_SCHEMA")
