"""The exceptions list as CSV, for the spreadsheet an operations desk works from."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kevin.domain.models import AgedTrade
from kevin.domain.notes import NotesSummary

COLUMNS = (
    "participant", "trade_id", "version", "counterparty", "side", "product", "quantity",
    "price", "currency", "trade_date", "settlement_date", "location", "status",
    "first_submitted_at", "cutoff_at", "overdue", "differences", "notes", "last_note_by",
    "last_note_at",
)
# A cell a spreadsheet would read as a formula (CSV injection): such text is written
# with a leading apostrophe, which the spreadsheet shows as text and does not run.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    text = format(value, "f") if hasattr(value, "as_tuple") else str(value)
    if isinstance(value, str) and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def _differences(trade: AgedTrade) -> str:
    """Each counterparty trade it differs from, with the fields: ``B-7: price, quantity``."""
    return "; ".join(f"{m.counterparty_trade_id}: "
                     + ", ".join(f.field for f in m.fields) for m in trade.mismatches)


def exceptions_csv(trades: Iterable[AgedTrade],
                   notes: Mapping[tuple[str, str], NotesSummary]) -> str:
    """RFC 4180 CSV: a header row (COLUMNS), then one row a trade. Amounts as exact
    decimal text, instants in RFC 3339 UTC; the notes of a trade ``notes`` has none of
    (another participant's trade) are left empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for t in trades:
        summary = notes.get((t.participant, t.trade_id))
        writer.writerow([_cell(v) for v in (
            t.participant, t.trade_id, t.version, t.counterparty, t.side, t.product,
            t.quantity, t.price, t.currency, t.trade_date, t.settlement_date, t.location,
            t.status, t.first_submitted_at, t.cutoff_at, t.overdue, _differences(t),
            summary.count if summary else 0, summary.last_author if summary else None,
            summary.last_written_at if summary else None)])
    return out.getvalue()
