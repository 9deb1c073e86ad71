"""Tolerance forms (kevin.domain.tolerances): pure, no database."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kevin.domain.tolerances import (
    AmountTolerance,
    DateTolerance,
    FieldTolerances,
    LocationTolerance,
    holiday_calendar,
    shift_business_days,
)

D = Decimal


def amount(form: Any) -> AmountTolerance:
    return AmountTolerance.model_validate(form)


# --- price and quantity forms ------------------------------------------------------------


def test_exact_and_ignore():
    assert amount("exact").within(D("100"), D("100.00"))
    assert not amount("exact").within(D("100"), D("100.000000001"))
    assert amount("ignore").within(D("100"), D("1"))
    assert amount("ignore").bounds(D("100")) == (None, None)
    assert amount("exact").bounds(D("100")) == (D("100"), D("100"))


def test_abs_is_inclusive():
    tol = amount({"abs": "0.50"})
    assert tol.within(D("1000"), D("1000.50")) and tol.within(D("1000"), D("999.50"))
    assert not tol.within(D("1000"), D("1000.51"))
    assert tol.bounds(D("1000")) == (D("999.50"), D("1000.50"))
    assert tol.text(D("1000")) == "0.50"


def test_bps_and_pct_are_of_the_resting_value():
    bps = amount({"bps": "10"})  # 0.1 % of the resting value
    assert bps.within(D("1000"), D("1001"))
    assert not bps.within(D("1000"), D("1001.01"))
    # Of the resting value, not the other's: 10 bps of 1001 is 1.001.
    assert bps.within(D("1001"), D("1000"))
    pct = amount({"pct": "0.10"})
    assert [pct.within(D("1000"), D(x)) for x in ("1001", "1001.0001")] == [True, False]
    assert D(pct.text(D("1000"))) == D(bps.text(D("1000"))) == D("1")


def test_max_abs_caps_a_relative_form():
    tol = amount({"pct": "1", "max_abs": "2"})  # 1 % of 1000 = 10, capped at 2
    assert tol.within(D("1000"), D("1002")) and not tol.within(D("1000"), D("1002.01"))
    assert tol.within(D("100"), D("101")) and not tol.within(D("100"), D("101.01"))
    assert tol.text(D("1000")) == "2" and D(tol.text(D("100"))) == 1
    assert tol.bounds(D("1000")) == (D("998"), D("1002"))


def test_range_is_asymmetric_from_the_resting_trade():
    tol = amount({"range": {"below": "0", "above": "5"}})
    assert tol.within(D("100"), D("105")) and tol.within(D("100"), D("100"))
    assert not tol.within(D("100"), D("99.99")) and not tol.within(D("100"), D("105.01"))
    # Whichever rests, the window around a value covers both directions.
    assert tol.bounds(D("100")) == (D("95"), D("105"))
    assert tol.text(D("100")) == "-0/+5"


@pytest.mark.parametrize("form", [
    {"abs": "-1"}, {"abs": "x"}, {"abs": "1", "bps": "2"}, {}, {"abs": "1", "max_abs": "2"},
    {"range": {"below": "1"}}, {"range": "1"}, {"pct": "NaN"}, {"bps": "1e400"}, "fuzzy",
    3, {"percent": "1"}, {"pct": "0.5", "max_abs": None},
])
def test_bad_amount_forms_are_refused(form: Any):
    with pytest.raises(ValidationError):
        amount(form)


def test_json_numbers_are_read_exactly_not_through_floats():
    # The API's JSON decoder gives Decimals; a float never gets this far (see above).
    assert amount({"abs": D("0.1")}).within(D("1"), D("1.1"))


@pytest.mark.parametrize("form", [
    "exact", "ignore", {"abs": "0.5"}, {"bps": "5"}, {"pct": "0.10", "max_abs": "1.00"},
    {"range": {"below": "0", "above": "5"}},
])
def test_amount_forms_round_trip(form: Any):
    tol = amount(form)
    assert tol.model_dump(mode="json") == form
    assert amount(tol.model_dump(mode="json")) == tol


PRICES = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=4)
FORMS = st.one_of(
    st.just("exact"), st.just("ignore"),
    st.builds(lambda x: {"abs": x}, st.decimals(min_value=0, max_value=50, places=2)),
    st.builds(lambda x: {"bps": x}, st.decimals(min_value=0, max_value=20_000, places=1)),
    st.builds(lambda x, m: {"pct": x, "max_abs": m},
              st.decimals(min_value=0, max_value=150, places=2),
              st.decimals(min_value=0, max_value=50, places=2)),
    st.builds(lambda b, a: {"range": {"below": b, "above": a}},
              st.decimals(min_value=0, max_value=50, places=2),
              st.decimals(min_value=0, max_value=50, places=2)),
)


@settings(max_examples=400, deadline=None)
@given(FORMS, PRICES, PRICES)
def test_every_match_lies_inside_the_search_window(form: Any, ours: Decimal,
                                                   theirs: Decimal):
    """The PostgreSQL book scans only the window: a value outside it must never match,
    whichever of the two rests."""
    tol = amount(form)
    low, high = tol.bounds(ours)
    if tol.within(theirs, ours) or tol.within(ours, theirs):
        assert low is None or theirs >= low
        assert high is None or theirs <= high


# --- settlement dates ----------------------------------------------------------------------


def test_days_either_way():
    tol = DateTolerance.model_validate({"days": 2})
    assert tol.within(date(2026, 11, 24), date(2026, 11, 26))
    assert tol.within(date(2026, 11, 26), date(2026, 11, 24))
    assert not tol.within(date(2026, 11, 24), date(2026, 11, 27))
    assert tol.bounds(date(2026, 11, 24)) == (date(2026, 11, 22), date(2026, 11, 26))


def test_business_days_skip_weekends_and_real_holidays():
    tol = DateTolerance.model_validate({"business_days": 1, "calendar": "GB"})
    # Friday 2026-12-24 → the next GB business day is Tuesday 29th (25th Christmas, 26th
    # Saturday, 28th Boxing Day observed), per the holidays library.
    assert tol.within(date(2026, 12, 24), date(2026, 12, 29))
    assert tol.within(date(2026, 12, 29), date(2026, 12, 24))
    assert not tol.within(date(2026, 12, 24), date(2026, 12, 30))
    # The same two dates, five calendar days apart, are more than one business day apart
    # on a calendar where the 28th is no holiday (the US).
    us = DateTolerance.model_validate({"business_days": 1, "calendar": "US"})
    assert not us.within(date(2026, 12, 24), date(2026, 12, 29))
    assert tol.text() == "1 business days (GB)"


def test_calendars_come_from_the_holidays_library():
    assert date(2026, 12, 28) in holiday_calendar("GB")
    assert date(2026, 7, 4) in holiday_calendar("US") or date(2026, 7, 3) in \
        holiday_calendar("US")
    assert date(2026, 4, 6) in holiday_calendar("GB-ENG")  # Easter Monday, England
    assert date(2026, 12, 25) in holiday_calendar("XLON")  # London Stock Exchange


@pytest.mark.parametrize("form", [
    {"business_days": 1, "calendar": "ZZ"}, {"business_days": 1}, {"days": 1, "calendar": "GB"},
    {"days": -1}, {"days": "1"}, {"days": True}, {"business_days": 99, "calendar": "GB"},
    {"days": 1, "business_days": 1, "calendar": "GB"}, {}, {"business_days": 1,
                                                        "calendar": "gb"},
])
def test_bad_date_forms_are_refused(form: Any):
    with pytest.raises(ValidationError):
        DateTolerance.model_validate(form)


def test_unknown_calendar_names_the_field():
    with pytest.raises(ValidationError) as raised:
        FieldTolerances.model_validate(
            {"settlement_date": {"business_days": 1, "calendar": "XX"}})
    locations = [error["loc"] for error in raised.value.errors()]
    assert ("settlement_date", "calendar") in locations


DATES = st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31))


@settings(max_examples=300, deadline=None)
@given(DATES, st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=5),
       st.sampled_from(["GB", "US", "XLON", "JP"]))
def test_the_business_day_window_is_exactly_the_matching_dates(day: date, offset: int,
                                                               reach: int, calendar: str):
    tol = DateTolerance.model_validate({"business_days": reach, "calendar": calendar})
    low, high = tol.bounds(day)
    for other in (day + timedelta(days=offset), day - timedelta(days=offset)):
        assert tol.within(day, other) == (low <= other <= high) == tol.within(other, day)


def test_shift_business_days_counts_only_working_days():
    gb = holiday_calendar("GB")
    assert shift_business_days(gb, date(2026, 12, 24), 1) == date(2026, 12, 29)
    assert shift_business_days(gb, date(2026, 12, 29), -1) == date(2026, 12, 24)
    assert shift_business_days(gb, date(2026, 12, 26), 0) == date(2026, 12, 26)


# --- location ------------------------------------------------------------------------------


def test_location_forms():
    exact = LocationTolerance.model_validate("exact")
    assert exact.within("LDN", "LDN") and not exact.within("LDN", "LONDON")
    assert exact.within(None, None) and not exact.within(None, "LDN")
    assert LocationTolerance.model_validate("ignore").within("LDN", None)
    eq = LocationTolerance.model_validate({"equivalent": [["LDN", "LONDON"], ["NYC", "NY"]]})
    assert eq.within("LDN", "LONDON") and eq.within("NY", "NYC") and eq.within("ZRH", "ZRH")
    assert not eq.within("LDN", "NYC") and not eq.within(None, "LDN")
    assert eq.model_dump(mode="json") == {"equivalent": [["LDN", "LONDON"], ["NYC", "NY"]]}


@pytest.mark.parametrize("form", [
    {"equivalent": []}, {"equivalent": [["LDN"]]}, {"equivalent": [["A", "B"], ["B", "C"]]},
    {"equivalent": "LDN"}, "near", {"equivalent": [["A", ""]]},
])
def test_bad_location_forms_are_refused(form: Any):
    with pytest.raises(ValidationError):
        LocationTolerance.model_validate(form)


# --- all fields together ------------------------------------------------------------------


def test_omitted_fields_are_exact():
    assert FieldTolerances.model_validate({}).model_dump(mode="json") == {
        "price": "exact", "quantity": "exact", "settlement_date": {"days": 0},
        "location": "exact"}


def test_failing_names_each_field_out_of_tolerance_from_the_resting_side():
    fields = FieldTolerances.model_validate({
        "price": {"pct": "0.10", "max_abs": "1.00"},
        "quantity": {"range": {"below": "0", "above": "5"}},
        "settlement_date": {"business_days": 1, "calendar": "GB"},
        "location": {"equivalent": [["LDN", "LONDON"]]}})

    class Side:
        def __init__(self, price: str, quantity: str, settlement: date, location: str):
            self.price, self.quantity = D(price), D(quantity)
            self.settlement_date, self.location = settlement, location

    resting = Side("1000", "100", date(2026, 12, 24), "LDN")
    assert fields.failing(resting, Side("1001", "105", date(2026, 12, 29), "LONDON")) == []
    assert fields.failing(resting, Side("1001.01", "99", date(2026, 12, 30), "NYC")) == [
        "price", "quantity", "settlement_date", "location"]
    # Seen from the other side, the asymmetric quantity range reads the other way.
    assert fields.failing(Side("1000", "105", date(2026, 12, 24), "LDN"),
                          Side("1000", "100", date(2026, 12, 24), "LDN")) == ["quantity"]
    assert fields.text("price", resting) == "1.00"
    assert fields.text("quantity", resting) == "-0/+5"


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        FieldTolerances.model_validate({"currency": "ignore"})
