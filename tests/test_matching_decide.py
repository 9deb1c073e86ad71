"""The pure matching decision and the rules model: no database, no clock, no I/O."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kevin.domain.matching import (
    UNMATCHED,
    Matched,
    Mismatched,
    candidate_order,
    decide,
    is_counterpart,
    out_of_tolerance,
)
from kevin.domain.models import Trade
from kevin.domain.rules import EXACT_RULES, Rules, RulesUpdate

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def trade(trade_id: str, participant: str = "BANKB", **overrides: Any) -> Trade:
    """A trade; by default BANKB's buy, the mirror of BANKA's sell in `ours()`."""
    fields: dict[str, Any] = {
        "trade_id": trade_id, "participant": participant,
        "counterparty": "BANKA" if participant == "BANKB" else "BANKB",
        "side": "buy" if participant == "BANKB" else "sell",
        "product": "XAU", "quantity": Decimal("100"), "price": Decimal("1000.25"),
        "currency": "USD", "trade_date": date(2026, 11, 20),
        "settlement_date": date(2026, 11, 24), "location": "LDN",
        "version": 1, "status": "unmatched", "reason": "submitted",
        "recorded_at": T0, "first_submitted_at": T0,
    }
    for name, value in overrides.items():
        fields[name] = Decimal(value) if name in ("price", "quantity") else value
    return Trade(**fields)


def ours(**overrides: Any) -> Trade:
    """BANKA's sell, arriving after the candidates (which rest in the book)."""
    return trade("A-1", "BANKA", **{"first_submitted_at": T0 + timedelta(hours=1), **overrides})


def rules(**body: Any) -> Rules:
    return Rules.model_validate(body)


def test_no_rules_means_exact_on_every_field():
    assert decide(ours(), [trade("B-1")], EXACT_RULES) == Matched(trade("B-1"))
    for field, value in [("price", "1000.26"), ("quantity", "100.000001"),
                         ("settlement_date", date(2026, 11, 25)), ("location", "NYC"),
                         ("location", None)]:
        decision = decide(ours(), [trade("B-1", **{field: value})], EXACT_RULES)
        assert isinstance(decision, Mismatched), field
        assert [f.field for f in decision.mismatches[0].fields] == [field]


def test_equal_decimals_in_other_notation_match_exactly():
    decision = decide(ours(price="1000.25"), [trade("B-1", price="1000.250000")], EXACT_RULES)
    assert isinstance(decision, Matched)


def test_absolute_price_tolerance_is_inclusive():
    r = rules(price_tolerance={"abs": "0.50"})
    assert isinstance(decide(ours(price="1000.75"), [trade("B-1")], r), Matched)
    assert isinstance(decide(ours(price="999.75"), [trade("B-1")], r), Matched)
    outside = decide(ours(price="1000.750000000000000001"), [trade("B-1")], r)
    assert isinstance(outside, Mismatched)
    assert outside.mismatches[0].model_dump() == {
        "counterparty_trade_id": "B-1",
        "fields": [{"field": "price", "ours": "1000.750000000000000001",
                    "theirs": "1000.25", "tolerance": "0.50"}],
    }


def test_bps_tolerance_is_relative_to_the_resting_price_on_small_fx_prices():
    # 1 bp of 1.08451 is 0.000108451: exactly at the edge matches, one digit more doesn't.
    r = rules(price_tolerance={"bps": "1"})
    resting = trade("B-1", product="EURUSD", price="1.08451")
    assert isinstance(decide(ours(product="EURUSD", price="1.084618451"), [resting], r), Matched)
    assert isinstance(decide(ours(product="EURUSD", price="1.084401549"), [resting], r), Matched)
    outside = decide(ours(product="EURUSD", price="1.084618452"), [resting], r)
    assert isinstance(outside, Mismatched)
    assert outside.mismatches[0].fields[0].tolerance == "0.000108451"
    # Relative to the *resting* price: the same gap is inside 1 bp of a bigger resting price.
    r5 = rules(price_tolerance={"bps": "0.5"})
    high, low = "1.0000500000125", "1.0000"  # a gap just over 0.5 bp of the lower price
    assert isinstance(decide(ours(price=low), [trade("B-1", price=high)], r5), Matched)
    assert isinstance(decide(ours(price=high), [trade("B-1", price=low)], r5), Mismatched)


def test_a_pair_gets_the_same_answer_whichever_side_is_evaluated():
    """bps are of the resting price: the trade that entered the book first, also when the
    later one is the one being evaluated (re-evaluation after an amend elsewhere)."""
    r = rules(price_tolerance={"bps": "0.5"})
    resting = trade("B-1", price="1.08451")
    for price in ["1.0845642255", "1.0845642256", "1.0844557745", "1.0844557744"]:
        incoming = ours(price=price)
        forwards = isinstance(decide(incoming, [resting], r), Matched)
        backwards = isinstance(decide(resting, [incoming], r), Matched)
        assert forwards == backwards, price
        assert forwards == (price in ("1.0845642255", "1.0844557745")), price


def test_floats_would_get_this_wrong_and_we_do_not():
    # 0.1 + 0.2 != 0.3 in binary floating point; in decimal the gap is exactly 0.3.
    r = rules(price_tolerance={"abs": "0.3"})
    assert isinstance(decide(ours(price="0.4"), [trade("B-1", price="0.1")], r), Matched)
    assert 0.4 - 0.1 > 0.3  # what a float comparison would have concluded
    # 38 significant digits survive intact (no 28-digit default context rounding).
    big = "12345678901234567890.123456789012345678"
    assert isinstance(decide(ours(price=big), [trade("B-1", price=big)], EXACT_RULES), Matched)
    nudged = "12345678901234567890.123456789012345679"
    assert isinstance(decide(ours(price=nudged), [trade("B-1", price=big)], EXACT_RULES),
                      Mismatched)


def test_quantity_settlement_and_location_rules():
    r = rules(quantity_tolerance={"abs": "0.5"}, settlement_date_window_days=2,
              location="ignore")
    near = trade("B-1", quantity="100.5", settlement_date=date(2026, 11, 26), location="NYC")
    assert isinstance(decide(ours(), [near], r), Matched)
    far = trade("B-1", quantity="100.51", settlement_date=date(2026, 11, 27), location=None)
    decision = decide(ours(), [far], r)
    assert isinstance(decision, Mismatched)
    assert [f.model_dump() for f in decision.mismatches[0].fields] == [
        {"field": "quantity", "ours": "100", "theirs": "100.51", "tolerance": "0.5"},
        {"field": "settlement_date", "ours": "2026-11-24", "theirs": "2026-11-27",
         "tolerance": "2"},
    ]
    located = decide(ours(location="LDN"), [trade("B-1", location=None)], EXACT_RULES)
    assert isinstance(located, Mismatched)
    assert located.mismatches[0].fields[0].model_dump() == {
        "field": "location", "ours": "LDN", "theirs": None, "tolerance": None}


def test_key_fields_must_agree_for_a_match_or_a_mismatch():
    not_counterparts = [
        trade("B-1", product="XAG"), trade("B-1", currency="EUR"),
        trade("B-1", side="sell"), trade("B-1", trade_date=date(2026, 11, 19)),
        trade("B-1", counterparty="BANKC"), trade("B-1", participant="BANKC"),
        trade("B-1", status="matched"), trade("B-1", status="cancelled"),
    ]
    for candidate in not_counterparts:
        assert decide(ours(), [candidate], EXACT_RULES) is UNMATCHED, candidate
    assert decide(ours(), [], EXACT_RULES) is UNMATCHED
    mismatched_resting = trade("B-1", status="mismatched")
    assert decide(ours(), [mismatched_resting], EXACT_RULES) == Matched(mismatched_resting)


def test_never_match_excludes_a_broken_pair_entirely():
    assert decide(ours(), [trade("B-1")], EXACT_RULES,
                  never_match={("BANKB", "B-1")}) is UNMATCHED
    decision = decide(ours(), [trade("B-1"), trade("B-2")], EXACT_RULES,
                      never_match={("BANKB", "B-1")})
    assert decision == Matched(trade("B-2"))


def test_best_candidate_order():
    r = rules(price_tolerance={"abs": "1"}, quantity_tolerance={"abs": "10"})
    later = T0 + timedelta(seconds=1)
    # Smallest price difference wins, whichever side of our price it is on.
    c = [trade("B-1", price="1000.95"), trade("B-2", price="999.80"), trade("B-3", price="1001")]
    assert decide(ours(), c, r) == Matched(c[1])
    # Equal price difference (above and below): smallest quantity difference.
    c = [trade("B-1", price="1000.75", quantity="103"), trade("B-2", price="999.75",
                                                              quantity="98")]
    assert decide(ours(), c, r) == Matched(c[1])
    # Then the earliest first submission, then trade_id.
    c = [trade("B-1", first_submitted_at=later), trade("B-2", first_submitted_at=T0)]
    assert decide(ours(), c, r) == Matched(c[1])
    c = [trade("B-9"), trade("B-10")]
    assert decide(ours(), c, r) == Matched(c[1])  # "B-10" < "B-9"


def test_the_decision_does_not_depend_on_candidate_order():
    r = rules(price_tolerance={"abs": "0.5"}, quantity_tolerance={"abs": "2"})
    rng = random.Random(7)
    pool = [trade(f"B-{i}", price=str(Decimal("1000.25") + Decimal(rng.randint(-80, 80)) / 100),
                  quantity=str(100 + rng.randint(-3, 3)),
                  first_submitted_at=T0 + timedelta(seconds=rng.randint(0, 3)))
            for i in range(12)]
    expected = decide(ours(), pool, r)
    for _ in range(50):
        rng.shuffle(pool)
        assert decide(ours(), pool, r) == expected
    assert decide(ours(), pool + pool, r) == expected  # duplicates count once


def test_mismatches_are_the_nearest_three_nearest_first():
    c = [trade(f"B-{i}", price=str(1000 + i)) for i in range(1, 6)]
    decision = decide(ours(price="1003.10"), c, EXACT_RULES)
    assert isinstance(decision, Mismatched)
    assert [m.counterparty_trade_id for m in decision.mismatches] == ["B-3", "B-4", "B-2"]
    assert [t.trade_id for t in decision.candidates] == ["B-3", "B-4", "B-2"]
    assert decision.mismatches[0].fields[0].model_dump() == {
        "field": "price", "ours": "1003.10", "theirs": "1003", "tolerance": "0"}


def test_a_candidate_within_tolerance_beats_a_nearer_price_outside_it():
    r = rules(price_tolerance={"abs": "1"})
    nearer_but_wrong_qty = trade("B-1", price="1000.25", quantity="99")
    further_but_fine = trade("B-2", price="1001.25")
    assert decide(ours(), [nearer_but_wrong_qty, further_but_fine], r) == \
        Matched(further_but_fine)


def test_candidate_order_is_invariant_7():
    a = ours()
    assert candidate_order(a, trade("B-1", price="1000.00")) == (
        Decimal("0.25"), Decimal("0"), T0, "B-1")


def test_rules_model_validates_and_serialises():
    body = {"price_tolerance": {"abs": "0.50"}, "quantity_tolerance": {"abs": "0"},
            "settlement_date_window_days": 0, "location": "exact"}
    assert Rules.model_validate(body).model_dump(mode="json") == body
    bps = Rules.model_validate({"price_tolerance": {"bps": 5}})
    assert bps.model_dump(mode="json")["price_tolerance"] == {"bps": "5"}
    assert Rules().model_dump(mode="json") == {
        "price_tolerance": {"abs": "0"}, "quantity_tolerance": {"abs": "0"},
        "settlement_date_window_days": 0, "location": "exact"}
    for bad in [{"price_tolerance": {"abs": "1", "bps": "1"}}, {"price_tolerance": {}},
                {"price_tolerance": {"abs": "-1"}}, {"price_tolerance": {"pct": "1"}},
                {"quantity_tolerance": {"abs": "NaN"}}, {"settlement_date_window_days": -1},
                {"location": "fuzzy"}, {"unknown": 1}]:
        with pytest.raises(ValidationError):
            Rules.model_validate(bad)
    assert RulesUpdate.model_validate({**body, "product": "XAU"}).rules() == \
        Rules.model_validate(body)


@pytest.mark.parametrize("bps", ["0", "0.5", "1", "25", "9999", "10000", "20000"])
def test_bps_index_bounds_contain_every_match(bps):
    """The store range-scans [low, high] and then tests exactly, so the bounds must
    contain every resting price the exact test accepts."""
    r = rules(price_tolerance={"bps": bps})
    ours_price = Decimal("1.08451")
    low, high = r.price_bounds(ours_price)
    step = Decimal("0.000000001")
    for resting in itertools.chain(
        (low - step * k for k in range(3)), (low + step * k for k in range(3)),
        ((high or Decimal(100)) + step * k for k in range(-2, 3)),
    ):
        if resting > 0 and r.price_within(ours_price, resting):
            assert resting >= low and (high is None or resting <= high), resting


# --- properties over random books ---------------------------------------------------------

_prices = st.integers(min_value=-30, max_value=30).map(lambda n: Decimal("1.08451") + n *
                                                       Decimal("0.00001"))
_candidates = st.lists(st.builds(
    lambda i, price, qty, days, loc, secs, side: trade(
        f"B-{i}", price=price, quantity=str(100 + qty), side=side, location=loc,
        settlement_date=date(2026, 11, 24) + timedelta(days=days),
        first_submitted_at=T0 + timedelta(seconds=secs)),
    st.integers(0, 50), _prices, st.integers(-2, 2), st.integers(-2, 2),
    st.sampled_from(["LDN", "NYC", None]), st.integers(0, 3), st.sampled_from(["buy", "sell"]),
), max_size=12, unique_by=lambda t: t.trade_id)
_rules = st.builds(
    lambda price, qty, days, loc: Rules.model_validate({
        "price_tolerance": price, "quantity_tolerance": {"abs": qty},
        "settlement_date_window_days": days, "location": loc}),
    st.sampled_from([{"abs": "0"}, {"abs": "0.0001"}, {"bps": "1"}, {"bps": "0.5"}]),
    st.sampled_from(["0", "1"]), st.integers(0, 1), st.sampled_from(["exact", "ignore"]))


@settings(max_examples=300, deadline=None)
@given(_candidates, _rules, st.randoms(use_true_random=False))
def test_decide_properties(candidates, rules, rng):
    incoming = ours(product="XAU", price="1.08451")
    decision = decide(incoming, candidates, rules)
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    assert decide(incoming, shuffled, rules) == decision  # order never matters
    eligible = [c for c in candidates if is_counterpart(incoming, c)]
    within = [c for c in eligible if not out_of_tolerance(incoming, c, rules)]
    if within:
        assert isinstance(decision, Matched)
        assert decision.candidate == min(within, key=lambda c: candidate_order(incoming, c))
    elif eligible:
        assert isinstance(decision, Mismatched)
        nearest = sorted(eligible, key=lambda c: candidate_order(incoming, c))[:3]
        assert list(decision.candidates) == nearest
        for mismatch, c in zip(decision.mismatches, nearest, strict=True):
            assert [f.field for f in mismatch.fields] == out_of_tolerance(incoming, c, rules)
            assert mismatch.fields  # a mismatch always says why
    else:
        assert decision is UNMATCHED
