"""JSON that keeps decimals exact: numbers parse to ``Decimal`` and are written back as
the same digits, never through binary floats."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def loads(data: str | bytes) -> Any:
    """Parse JSON; every non-integer number becomes a ``Decimal`` (NaN/Infinity too, so
    that validation, not the parser, refuses them with a field-level message). A lone
    surrogate escape (``"\\ud800"``) is refused with ValueError: it is no Unicode text,
    so it can be neither stored nor written back as UTF-8. Integers beyond 64 bits become
    ``Decimal`` too: orjson writes no wider integer, and the digits must come back as
    given."""
    text = data.decode(json.detect_encoding(data), "surrogatepass") \
        if isinstance(data, bytes | bytearray) else data
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        # Arrays and objects nested past the interpreter's recursion limit (about a
        # thousand deep): malformed for Kevin, like any other JSON it cannot read.
        raise ValueError("arrays and objects are nested too deeply") from None
    # Only a body with such an escape needs the walk (a proper pair is one character).
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _int(text: str) -> int | Decimal:
    if len(text) > 18:  # cheaper than int(): 18 digits always fit, longer may not
        value = Decimal(text)
        if not -(2**63) <= value < 2**64:
            return value
    return int(text)


def _refuse_lone_surrogates(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate escape") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key)
            _refuse_lone_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_lone_surrogates(item)


# One decoder for every call: json.loads(..., parse_float=...) builds a new JSONDecoder
# each time, a visible cost when every jsonb column of every row read comes through here.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal, parse_int=_int)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"non-finite number {value} cannot be written as JSON")
        return orjson.Fragment(format(value, "f"))
    if isinstance(value, UUID):  # asyncpg's own UUID subclass, which orjson does not know
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default,
                        option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def dumps_str(value: Any) -> str:
    return dumps(value).decode()
