"""Imported files (kevin.formats): each record handled like a line of a batch.

New trades go through the batch path itself (kevin.engine.batch.submit_batch, one
transaction for each run of consecutive submissions, matched exactly as a batch's lines).
A record that changes a trade (an MT300 ``AMND`` or ``CANC``, an FpML correction) is an
amendment or cancellation as ``PUT``/``DELETE`` would make it, against the version current
when it is read, in its own transaction, in file order; restating what is already stored
changes nothing (``exists``), so importing a file twice writes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kevin.domain.errors import (
    Conflict,
    KevinError,
    NotFound,
    TradeCancelled,
    VersionConflict,
)
from kevin.domain.models import Trade, TradeSubmission, differing_fields
from kevin.engine.batch import LineResult, terms_of
from kevin.formats.records import Operation

if TYPE_CHECKING:
    from kevin.engine.service import TradeService

ImportResult = Literal[LineResult, "amended", "cancelled"]
# An amendment or cancellation that lost a version race (the trade matched meanwhile)
# reads the trade again and tries again, this many times.
CHANGE_RETRIES = 3
# What a record's change may run into, reported on that record alone.
_REFUSALS = (NotFound, TradeCancelled, Conflict, VersionConflict)


@dataclass(frozen=True)
class ImportOutcome:
    """What became of one record: ``trade`` is the trade's latest version after it."""

    result: ImportResult
    trade: Trade | None = None
    error: dict[str, Any] | None = None


def _refused(error: KevinError) -> ImportOutcome:
    return ImportOutcome("invalid", None, {"error": error.code, "message": error.message,
                                           "details": error.details})


async def import_records(service: TradeService, participant: str,
                         records: Sequence[tuple[Operation, TradeSubmission]]
                         ) -> list[ImportOutcome]:
    """One outcome per record, in order."""
    outcomes: list[ImportOutcome | None] = [None] * len(records)
    run: list[int] = []

    async def submit_run() -> None:
        batch = await service.submit_batch(participant, [records[i][1] for i in run])
        for index, outcome in zip(run, batch, strict=True):
            outcomes[index] = ImportOutcome(outcome.result, outcome.trade, outcome.error)
        run.clear()

    for index, (operation, submission) in enumerate(records):
        if operation == "submit":
            run.append(index)
            continue
        if run:
            await submit_run()
        change = _amend if operation == "amend" else _cancel
        try:
            outcomes[index] = await change(service, participant, submission)
        except _REFUSALS as error:
            outcomes[index] = _refused(error)
    if run:
        await submit_run()
    return [outcome for outcome in outcomes if outcome is not None]


async def _amend(service: TradeService, participant: str, submission: TradeSubmission
                 ) -> ImportOutcome:
    terms = terms_of(submission)
    for attempt in range(CHANGE_RETRIES + 1):
        current = await service.current(participant, submission.trade_id)
        if current.status == "cancelled":
            raise TradeCancelled(f"trade {current.trade_id} is cancelled",
                                 {"current_version": current.version})
        if not differing_fields(current.terms(), terms):
            return ImportOutcome("exists", current)
        try:
            return ImportOutcome("amended", await service.amend(
                participant, submission.trade_id, current.version, terms))
        except VersionConflict:
            if attempt == CHANGE_RETRIES:
                raise
    raise AssertionError("unreachable")


async def _cancel(service: TradeService, participant: str, submission: TradeSubmission
                  ) -> ImportOutcome:
    for attempt in range(CHANGE_RETRIES + 1):
        current = await service.current(participant, submission.trade_id)
        if current.status == "cancelled":
            return ImportOutcome("exists", current)
        try:
            return ImportOutcome("cancelled", await service.cancel(
                participant, submission.trade_id, current.version))
        except VersionConflict:
            if attempt == CHANGE_RETRIES:
                raise
    raise AssertionError("unreachable")
