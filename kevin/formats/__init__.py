"""Standard formats of trades: readers that turn a file into records (each handled like a
line of a batch) and writers that state a trade as a confirmation. Pure: no I/O.

- ``csvfile``: CSV with a header row of trade field names.
- ``mt300``: SWIFT MT300, Foreign Exchange Confirmation.
- ``fpml``: FpML 5.x confirmation view, ``requestConfirmation`` of an ``fxSingleLeg``.
"""

from __future__ import annotations

from typing import Literal

from kevin.formats import csvfile, fpml, mt300
from kevin.formats.records import Record, UnreadableFile

Format = Literal["csv", "mt300", "fpml"]
FORMATS: tuple[Format, ...] = ("csv", "mt300", "fpml")
# Formats that name the parties by BIC: the importer needs its own registered.
BY_BIC: tuple[Format, ...] = ("mt300", "fpml")


def read(kind: Format, data: bytes, own_bic: str | None) -> list[Record]:
    """The records of a file; UnreadableFile when it cannot be read as ``kind`` at all.
    ``own_bic``: the importer's BIC (11-character form), needed by the BIC formats."""
    if kind == "csv":
        return csvfile.parse(csvfile.decode(data))
    assert own_bic is not None
    if kind == "fpml":
        return fpml.parse(data, own_bic)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UnreadableFile(f"line {line}: SWIFT messages are ASCII text",
                             [{"field": "body", "line": line, "message": "not text"}]) from None
    return mt300.parse(text, own_bic)
