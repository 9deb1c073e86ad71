"""What every format's reader yields: records, each a trade operation or the reason it is
not one, with where in the file it came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kevin.domain.errors import KevinError

Operation = Literal["submit", "amend", "cancel"]

MAX_RECORDS = 10_000


class MalformedRecord(KevinError):
    """The record is not a well-formed message of its format."""

    code = "malformed_record"


class UnreadableFile(KevinError):
    """The file cannot be read as its format at all (encoding, header, XML)."""

    code = "unreadable_file"


@dataclass(frozen=True)
class Record:
    """One record of an imported file.

    ``body`` is the trade as a ``POST /v1/trades`` body would state it (submit, amend;
    a cancel states the cancelled trade too, though only its ``trade_id`` counts); the
    caller validates it exactly like a line of a batch. ``sources`` names where each trade
    field came from (a SWIFT tag, an FpML element, a CSV column), so that a validation
    error can say so. ``counterparty_bic``: the counterparty as the message names it, for
    the caller to resolve to a participant (CSV names the participant directly).
    """

    line: int
    operation: Operation = "submit"
    body: dict[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    counterparty_bic: str | None = None
    error: MalformedRecord | None = None

    def refused(self, error: MalformedRecord) -> Record:
        return dataclasses.replace(self, error=error)


def malformed(line: int, source: str, message: str) -> Record:
    """A record refused for one reason, named by its source (tag, element, column)."""
    return Record(line=line, error=MalformedRecord(
        f"{source}: {message}", [{"field": source, "message": message}]))


def resolve_counterparties(records: list[Record], directory: Mapping[str, str],
                           participant: str) -> list[Record]:
    """Each record's counterparty BIC as the participant registered with it; a BIC no
    participant registered (or the importer's own) makes that record malformed."""
    resolved = []
    for record in records:
        bic = record.counterparty_bic
        if record.error is not None or bic is None:
            resolved.append(record)
            continue
        source = record.sources.get("counterparty", "counterparty")
        name = directory.get(bic)
        if name is None:
            message = f"no participant has registered BIC {bic}"
            resolved.append(record.refused(MalformedRecord(
                f"{source}: {message}", [{"field": source, "message": message}])))
        elif name == participant:
            message = f"BIC {bic} is your own; the counterparty must be another participant"
            resolved.append(record.refused(MalformedRecord(
                f"{source}: {message}", [{"field": source, "message": message}])))
        else:
            resolved.append(dataclasses.replace(
                record, body={**record.body, "counterparty": name}))
    return resolved
