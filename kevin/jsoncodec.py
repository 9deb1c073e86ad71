"""JSON that keeps decimals exact: numbers parse to ``Decimal`` and are written back as
the same digits, never through binary floats."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def loads(data: str | bytes) -> Any:
    """Parse JSON; every non-integer number becomes a ``Decimal`` (NaN/Infinity too, so
    that validation, not the parser, refuses them with a field-level message). Integers
    beyond 64 bits become ``Decimal`` too: orjson writes no wider integer, and the digits
    must come back as given."""
    return json.loads(data, parse_float=Decimal, parse_constant=Decimal, parse_int=_int)


def _int(text: str) -> int | Decimal:
    if len(text) > 18:  # cheaper than int(): 18 digits always fit, longer may not
        value = Decimal(text)
        if not -(2**63) <= value < 2**64:
            return value
    return int(text)


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
