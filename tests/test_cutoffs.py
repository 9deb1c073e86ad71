"""Cut-offs without a database: business days of a calendar, weekends, holidays, and the
daylight-saving changes of Europe/London and America/New_York."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest
from pydantic import ValidationError

from kevin.domain.cutoffs import cutoff_at, cutoff_day, is_overdue, local_instant
from kevin.domain.profiles import Cutoff
from kevin.domain.rules import Rules


def _cutoff(days: int, at: str = "17:00", zone: str = "Europe/London",
            calendar: str = "GB") -> Cutoff:
    return Cutoff(business_days=days, time=at, timezone=zone, calendar=calendar)


def test_same_day_cutoff_in_winter_and_summer_london() -> None:
    # 17:00 London is 17:00 UTC in winter (GMT) and 16:00 UTC in summer (BST).
    assert cutoff_at(date(2026, 1, 14), _cutoff(0)) == datetime(2026, 1, 14, 17, tzinfo=UTC)
    assert cutoff_at(date(2026, 7, 14), _cutoff(0)) == datetime(2026, 7, 14, 16, tzinfo=UTC)


def test_business_days_step_over_the_london_autumn_change() -> None:
    # Clocks go back on Sunday 2026-10-25: Thursday's T+0 is in BST, Friday's T+1 lands on
    # Monday in GMT.
    assert cutoff_at(date(2026, 10, 22), _cutoff(0)) == datetime(2026, 10, 22, 16, tzinfo=UTC)
    assert cutoff_at(date(2026, 10, 23), _cutoff(1)) == datetime(2026, 10, 26, 17, tzinfo=UTC)


def test_new_york_spring_change() -> None:
    # Clocks go forward on Sunday 2026-03-08: Friday 17:00 EST is 22:00 UTC, Monday's
    # 17:00 EDT is 21:00 UTC.
    ny = _cutoff(1, zone="America/New_York", calendar="US")
    assert cutoff_at(date(2026, 3, 5), ny) == datetime(2026, 3, 6, 22, tzinfo=UTC)
    assert cutoff_at(date(2026, 3, 6), ny) == datetime(2026, 3, 9, 21, tzinfo=UTC)


def test_a_time_in_the_skipped_hour_reads_with_the_offset_before_the_change() -> None:
    # 02:30 does not exist in New York on 2026-03-08: read as 02:30 EST = 07:30 UTC
    # (03:30 EDT on the clock); 01:30 in London on 2026-03-29 is 01:30 GMT = 02:30 BST.
    assert local_instant(date(2026, 3, 8), time(2, 30), "America/New_York") == \
        datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert local_instant(date(2026, 3, 29), time(1, 30), "Europe/London") == \
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_time_in_the_repeated_hour_is_its_first_occurrence() -> None:
    # 01:30 happens twice in New York on 2026-11-01 (EDT, then EST): the earlier instant.
    assert local_instant(date(2026, 11, 1), time(1, 30), "America/New_York") == \
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert local_instant(date(2026, 10, 25), time(1, 30), "Europe/London") == \
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_holidays_and_weekends_are_not_business_days() -> None:
    # GB: Friday 2026-12-25 Christmas, Monday 2026-12-28 Boxing Day (substitute).
    assert cutoff_day(date(2026, 12, 24), _cutoff(1)) == date(2026, 12, 29)
    assert cutoff_day(date(2026, 12, 24), _cutoff(2)) == date(2026, 12, 30)
    assert cutoff_day(date(2026, 12, 24), _cutoff(0)) == date(2026, 12, 24)
    # US: 2026-12-25 is a holiday but 2026-12-28 is not.
    assert cutoff_day(date(2026, 12, 24), _cutoff(1, calendar="US")) == date(2026, 12, 28)
    # Friday + 1 is Monday.
    assert cutoff_day(date(2026, 11, 27), _cutoff(1)) == date(2026, 11, 30)


def test_zero_days_on_a_closed_day_rolls_forward_to_the_next_business_day() -> None:
    assert cutoff_day(date(2026, 12, 25), _cutoff(0)) == date(2026, 12, 29)
    assert cutoff_day(date(2026, 11, 28), _cutoff(0)) == date(2026, 11, 30)  # a Saturday
    # n > 0 counts business days after the closed day: Saturday + 1 is Monday too.
    assert cutoff_day(date(2026, 11, 28), _cutoff(1)) == date(2026, 11, 30)


def test_overdue_only_after_the_cutoff_and_only_while_open() -> None:
    at = datetime(2026, 1, 14, 17, tzinfo=UTC)
    after = datetime(2026, 1, 14, 17, 0, 0, 1, tzinfo=UTC)
    assert not is_overdue("unmatched", at, at)  # at the cut-off: still in time
    assert is_overdue("unmatched", at, after)
    assert is_overdue("mismatched", at, after)
    assert not is_overdue("matched", at, after)
    assert not is_overdue("cancelled", at, after)
    assert not is_overdue("unmatched", None, after)


@pytest.mark.parametrize(("cutoff", "field"), [
    ({"business_days": 0, "time": "24:00", "timezone": "Europe/London", "calendar": "GB"},
     ("cutoff", "time")),
    ({"business_days": 0, "time": "17:00", "timezone": "Mars/Olympus", "calendar": "GB"},
     ("cutoff", "timezone")),
    ({"business_days": 0, "time": "17:00", "timezone": "Europe/London", "calendar": "ZZ"},
     ("cutoff", "calendar")),
])
def test_product_rules_refuse_a_bad_cutoff_naming_the_field(
        cutoff: dict[str, object], field: tuple[str, str]) -> None:
    with pytest.raises(ValidationError) as raised:
        Rules.model_validate({"cutoff": cutoff})
    assert [error["loc"] for error in raised.value.errors()] == [field]


def test_product_rules_carry_a_cutoff_and_old_bodies_stay_as_they_were() -> None:
    given = {"business_days": 1, "time": "16:30", "timezone": "Europe/London",
             "calendar": "GB"}
    rules = Rules.model_validate({"fields": {"price": {"abs": "0.5"}}, "cutoff": given})
    assert rules.cutoff == Cutoff.model_validate(given)
    assert rules.model_dump(mode="json")["cutoff"] == given
    assert "cutoff" not in Rules.model_validate({}).model_dump(mode="json")
    assert "cutoff" not in Rules.model_validate(
        {"fields": {"price": {"abs": "0.5"}}}).model_dump(mode="json")
