"""kevin.jsoncodec.for_jsonb: an object holding a number jsonb would rewrite, at any
depth, is stored as its JSON text; any other object as itself."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kevin import jsoncodec
from kevin.jsoncodec import JsonNumber


@pytest.mark.parametrize("value", [
    {"n": JsonNumber("1e99")},
    {"a": "x", "b": [1, "y", {"c": [JsonNumber("-0")]}]},
    {"deep": {"er": {"still": [[JsonNumber("1E+5")]]}}},
])
def test_an_object_holding_a_json_number_is_stored_as_its_text(value) -> None:
    stored = jsoncodec.for_jsonb(value)
    assert isinstance(stored, str)
    assert jsoncodec.from_jsonb(stored) == value


@pytest.mark.parametrize("value", [
    {}, {"bench": "abc"}, {"a": 1, "b": [Decimal("1.50"), "-0", {"c": None}], "d": True},
    {"s": ["1e99", {"t": "x"}]},
])
def test_any_other_object_is_stored_as_itself(value) -> None:
    assert jsoncodec.for_jsonb(value) is value
