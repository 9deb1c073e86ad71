"""CSV (RFC 4180): a header row of trade field names, then one trade per row.

Read with the standard library's csv module (quoted fields may hold commas, quotes and
line breaks). UTF-8, with or without a byte order mark. Columns: the fields of
``POST /v1/trades`` (``location`` optional) and ``attributes.NAME`` columns, whose cells
become string attributes; an empty ``location`` or attribute cell means none. Blank lines
are skipped, as in a batch.
"""

from __future__ import annotations

import codecs
import csv
import io

from kevin.formats.records import MalformedRecord, Record, UnreadableFile

REQUIRED_COLUMNS = ("trade_id", "counterparty", "side", "product", "quantity", "price",
                    "currency", "trade_date", "settlement_date")
OPTIONAL_COLUMNS = ("location",)
ATTRIBUTE_PREFIX = "attributes."


def decode(data: bytes) -> str:
    """The file's text: UTF-8, a leading byte order mark dropped. Anything else cannot be
    read at all: UnreadableFile naming the line of the first bad byte."""
    try:
        return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UnreadableFile(
            f"the file is not UTF-8: line {line} holds the byte "
            f"0x{data[error.start]:02x}; save it as UTF-8",
            [{"field": "body", "line": line, "message": "not UTF-8"}]) from None


def _header(row: list[str]) -> list[str]:
    columns = [cell.strip() for cell in row]
    problems = []
    for column in columns:
        if column not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and not (
                column.startswith(ATTRIBUTE_PREFIX) and len(column) > len(ATTRIBUTE_PREFIX)):
            problems.append({"field": column, "message": "not a trade field nor "
                                                         "attributes.NAME"})
    problems += [{"field": column, "message": "named twice"}
                 for column in sorted({c for c in columns if columns.count(c) > 1})]
    problems += [{"field": column, "message": "missing"}
                 for column in REQUIRED_COLUMNS if column not in columns]
    if problems:
        raise UnreadableFile("the header row must name the trade's fields", problems)
    return columns


def parse(text: str) -> list[Record]:
    """One record per non-blank row after the header."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: list[str] | None = None
    records: list[Record] = []
    ended = 0  # the line the previous row ended on
    while True:
        line = ended + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            ended = reader.line_num
            if columns is None:
                raise UnreadableFile(f"line {line}: the header row is not valid CSV: {error}",
                                     [{"field": "header", "line": line,
                                       "message": str(error)}]) from None
            message = f"not valid CSV: {error}"
            records.append(Record(line=line, error=MalformedRecord(
                f"line {line}: {message}", [{"field": f"line {line}", "message": message}])))
            continue
        ended = reader.line_num
        if not row:
            continue  # a blank line
        if columns is None:
            columns = _header(row)
            continue
        if len(row) != len(columns):
            message = f"{len(row)} cells, but the header names {len(columns)} columns"
            records.append(Record(line=line, error=MalformedRecord(
                f"line {line}: {message}", [{"field": f"line {line}", "message": message}])))
            continue
        body: dict[str, object] = {}
        attributes: dict[str, str] = {}
        for column, cell in zip(columns, row, strict=True):
            if column.startswith(ATTRIBUTE_PREFIX):
                if cell != "":
                    attributes[column.removeprefix(ATTRIBUTE_PREFIX)] = cell
            elif cell != "" or column not in OPTIONAL_COLUMNS:
                body[column] = cell
        body["attributes"] = attributes
        records.append(Record(line=line, body=body))
    return records
