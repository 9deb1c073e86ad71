"""The batch's hand-built paths must say exactly what pydantic says: a line read by
orjson and ``plain_submission`` is the submission ``jsoncodec.loads`` and
``model_validate`` give (any other line goes that way itself), and ``utc_text`` writes
what strftime wrote."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kevin import jsoncodec
from kevin.api.batch import parse_line, validate_line
from kevin.bench import batch as bench_batch
from kevin.domain import models
from kevin.domain.models import (
    TradeSubmission,
    plain_submission,
    utc_text,
)

VALID: dict[str, Any] = {
    "trade_id": "T-1", "counterparty": "BANKB", "side": "sell", "product": "XAU",
    "quantity": "100", "price": "1000.25", "currency": "USD", "trade_date": "2026-11-20",
    "settlement_date": "2026-11-24", "location": "LDN", "attributes": {"desk": "fx"}}

# Values each field may take: valid ones in several spellings, and invalid ones of every
# kind the fast path must leave to validation.
_TEXTS = ["", "a", "BANKB", "BANKA", "bank", "X" * 33, "LDN", "\x00", "a\x00b", "é", "USD",
          "usd", "US", "1", "0", "-0", "00", "1.", ".5", "1e2", "1E+2", "0.0", "-1", "+1",
          " 1", "1_000", "100", "1000.25", "100.000", "0.000000000000000001",
          "0.0000000000000000001", "1" * 20 + "." + "1" * 18, "1" * 21, "٣",
          "2026-11-20", "2026-02-30", "0000-01-01", "2026-1-20", "20261120", "2026-11-20T00:00",
          "buy", "sell", "Buy", "T-1", "..", ".", "a.b", "x" * 64, "x" * 65, "A/B-1.c_d",
          "a b"]
_NUMBERS = [0, 1, -1, 100, 2**63, 2**64, -(2**63) - 1, 1.5, 0.0, -0.0, 1e99, 100.0]
_SCALARS = st.one_of(st.sampled_from(_TEXTS), st.sampled_from(_NUMBERS), st.none(),
                     st.booleans(), st.text(max_size=8))
_JSON_TEXT = st.recursive(
    st.one_of(_SCALARS, st.sampled_from(["-0", "-0.0", "1e99", "1.0", "0", "NaN", "1E400",
                                         '"\\ud800"', '"\\u0000"', "18446744073709551616"])
              .map(lambda raw: ("raw", raw))),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "\x00", "n"]), inner,
                                            max_size=3)),
    max_leaves=6)


def _render(value: Any) -> str:
    """JSON text for a generated value; ("raw", text) is written as the text itself."""
    if isinstance(value, tuple):
        return value[1]
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_render(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """A line near a valid trade: some fields replaced, dropped or added."""
    fields: dict[str, Any] = dict(VALID)
    for name in draw(st.lists(st.sampled_from([*VALID, "extra"]), max_size=3)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            fields.pop(name, None)
        elif name == "attributes" or choice == 2:
            fields[name] = draw(_JSON_TEXT)
        else:
            fields[name] = draw(_SCALARS)
    return _render(fields).encode()


def _same_submission(got: TradeSubmission, expected: TradeSubmission) -> None:
    assert type(got) is TradeSubmission
    # repr keeps what == does not: Decimal('100') is not Decimal('100.0'), 1 is not True.
    assert repr(got.__dict__) == repr(expected.__dict__)
    assert got.model_fields_set == expected.model_fields_set
    assert jsoncodec.dumps(got.model_dump(mode="python")) == \
        jsoncodec.dumps(expected.model_dump(mode="python"))


@settings(max_examples=600, deadline=None)
@given(lines())
def test_a_line_parses_to_what_validation_gives(raw: bytes) -> None:
    got, expected = parse_line(raw, "BANKA"), validate_line(raw, "BANKA")
    if isinstance(expected, TradeSubmission):
        assert isinstance(got, TradeSubmission)
        _same_submission(got, expected)
    else:
        assert jsoncodec.dumps(got) == jsoncodec.dumps(expected)


@settings(max_examples=600, deadline=None)
@given(lines())
def test_plain_submission_is_the_validated_model_or_none(raw: bytes) -> None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    plain = plain_submission(data)
    if plain is not None:
        expected = validate_line(raw, "nobody")
        assert isinstance(expected, TradeSubmission)
        _same_submission(plain, expected)


def test_the_bench_lines_and_plain_ones_take_the_fast_path() -> None:
    for line in [*bench_batch.batch_lines("r1", 0, 3, "buy"), VALID,
                 {k: v for k, v in VALID.items() if k not in ("location", "attributes")},
                 {**VALID, "location": None, "attributes": {"n": [1, "x", None, True]}}]:
        assert plain_submission(orjson.loads(orjson.dumps(line))) is not None


def test_lines_orjson_would_read_otherwise_are_left_to_validation() -> None:
    for attributes in ('{"n": -0}', '{"n": 1.5}', '{"n": [1e2]}', '{"n": 18446744073709551616}'):
        raw = _render({**VALID, "attributes": ("raw", attributes)}).encode()
        assert plain_submission(orjson.loads(raw)) is None
        parsed = parse_line(raw, "BANKA")
        assert isinstance(parsed, TradeSubmission)
        assert jsoncodec.dumps(parsed.attributes) == attributes.replace(" ", "").encode()


# --- utc_text -------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-11))])))
def test_utc_text_is_what_strftime_wrote(value: datetime) -> None:
    assert utc_text(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_utc_text_pads_nothing_it_did_not() -> None:
    assert utc_text(datetime(2026, 11, 20, 10, tzinfo=UTC)) == "2026-11-20T10:00:00.000000Z"
    assert utc_text(datetime(5, 1, 1, tzinfo=UTC)) == \
        datetime(5, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _validation_of(model: type[BaseModel]) -> str:
    """What the model validates (and serializes), as text: its core schema, functions by
    name (a ref's per-process id taken out)."""
    def name(value: Any) -> str:
        return getattr(value, "__qualname__", None) or type(value).__qualname__
    text = json.dumps(model.__pydantic_core_schema__, sort_keys=True, default=name)
    return re.sub(r'("ref": "[^":]+):[0-9]+"', r'\1"', text)


# The validation plain_submission was written to mirror. A field, a constraint or a
# validator added to TradeSubmission (or TradeTerms) changes it: plain_submission must
# learn the change too (or leave such lines to validation), then this fingerprint follows.
# (A pydantic upgrade that changes the schema it builds lands here as well: worth the look.)
MIRRORED_VALIDATION = "30c798a433bb8e077f6ab7a563ec33c369617c5bad898b9cad7bf239c7ce0e83"


def test_plain_submission_mirrors_the_models_validation_as_it_is() -> None:
    fingerprint = hashlib.sha256(_validation_of(TradeSubmission).encode()).hexdigest()
    assert fingerprint == MIRRORED_VALIDATION, (
        "TradeSubmission validates differently from what plain_submission mirrors: "
        "update plain_submission, then MIRRORED_VALIDATION")


def test_a_few_short_attribute_texts_are_within_every_limit() -> None:
    # _few_texts accepts them without measuring: at their longest, every character
    # escaped (6 bytes), they must fit what the general checks allow.
    widest = models._FEW_ATTRIBUTES * (2 * models._SHORT_TEXT * 6 + len('"":"",'))
    assert widest < models.MAX_TRADE_JSON_BYTES - models._BOUNDED_FIELDS_BYTES
    assert models._FEW_ATTRIBUTES * 2 * models._SHORT_TEXT < models.MAX_TRADE_JSON_BYTES
    assert models.MAX_ATTRIBUTES_DEPTH >= 1
    attributes = {"\x01" * (models._SHORT_TEXT - 2) + f"{n:02d}": "\x01" * models._SHORT_TEXT
                  for n in range(models._FEW_ATTRIBUTES)}
    line = {**VALID, "attributes": attributes}
    assert models._few_texts(attributes)
    _same_submission(plain_submission(orjson.loads(orjson.dumps(line))),
                     validate_line(orjson.dumps(line), "nobody"))
