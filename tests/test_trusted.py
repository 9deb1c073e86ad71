"""What the replay's read leans on in the domain: ``trusted`` builds instances from
values known to be valid, without validation — the instances of a frozen model share one
set of field names (every field is set), and nothing an instance does may change
another's; and instants carried as microseconds since the epoch."""

from __future__ import annotations

from uuid import uuid4

from kevin.domain.models import MatchRef, trusted
from kevin.domain.replay import MatchState, ReplayChange, ReplayMatch


def _match_ref(version: int) -> MatchRef:
    return trusted(MatchRef, {"match_id": uuid4(), "counterparty_trade_id": "B-1",
                              "counterparty_version": version, "accepted_differences": None,
                              "rules": None})


def test_a_frozen_models_instances_share_their_fields_set_and_a_copy_gets_its_own():
    first, second = _match_ref(2), _match_ref(3)
    every = set(MatchRef.model_fields)
    assert first.model_fields_set == every
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__
    copied = first.model_copy(update={"counterparty_version": 4})
    assert copied.counterparty_version == 4 and first.counterparty_version == 2
    assert copied.__pydantic_fields_set__ is not first.__pydantic_fields_set__
    assert second.model_fields_set == every == set(MatchRef.model_fields)


def test_a_model_that_is_not_frozen_gets_a_set_per_instance():
    state = trusted(MatchState, {"status": "unmatched", "version": 1, "match": None,
                                 "mismatches": []})
    values = {"participant": "BANKA", "trade_id": "A-1", "before": state, "after": state}
    first, second = trusted(ReplayChange, dict(values)), trusted(ReplayChange, dict(values))
    assert not ReplayChange.model_config.get("frozen")
    assert first.model_fields_set == set(values)
    assert first.__pydantic_fields_set__ is not second.__pydantic_fields_set__


def test_values_naming_fewer_fields_get_a_set_of_those_alone():
    partial = trusted(ReplayMatch, {"counterparty_trade_id": "B-1"})
    assert partial.model_fields_set == {"counterparty_trade_id"}


def test_a_replays_instants_in_microseconds_convert_back_exactly_and_keep_their_order():
    """The history read compares instants as microseconds since the epoch and builds
    datetimes only for the versions it builds (kevin.domain.replay)."""
    from datetime import UTC, datetime, timedelta, timezone

    from kevin.domain.replay import instant, microseconds

    instants = [datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC),
                datetime(2026, 11, 30, 8, 19, 12, 123_456, tzinfo=UTC),
                datetime(2026, 11, 30, 9, 19, 12, 123_457, tzinfo=timezone(timedelta(hours=1))),
                datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)]
    for at in instants:
        assert instant(microseconds(at)) == at and instant(microseconds(at)).tzinfo is UTC
    assert sorted(instants, key=microseconds) == sorted(instants)
    assert microseconds(instants[3]) - microseconds(instants[2]) == 1
