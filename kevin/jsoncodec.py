"""JSON that keeps decimals exact: numbers parse to ``Decimal`` and are written back as
the same digits, never through binary floats. A number whose plain digits would not be
its text (``1e99``, ``-0``) parses to a ``JsonNumber`` and is written back as given."""

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


class JsonNumber(Decimal):
    """A JSON number that is written back as it was read: one with an exponent (``1e99``,
    whose plain digits could be 100,000 long) or a negative zero (``-0``, ``-0.0``, which
    plain notation and PostgreSQL's numeric turn into ``0``). It compares, hashes and
    computes as the Decimal it is."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number

    # Immutable like Decimal; Decimal's own copy would rebuild it from str(), '1E+99'.
    def __copy__(self) -> JsonNumber:
        return self

    def __deepcopy__(self, memo: Any) -> JsonNumber:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (JsonNumber, (self.text,))


def number_text(value: int | float | Decimal) -> str:
    """A number as ``dumps`` writes it."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, Decimal):
        return format(value, "f")
    return orjson.dumps(value).decode()


def for_jsonb(value: dict[str, Any]) -> dict[str, Any] | str:
    """An object as a jsonb column should hold it: itself, or — when it holds a JsonNumber —
    its JSON text, which jsonb keeps as a string. jsonb stores numbers as numeric, which
    writes 1e99 out in 100 digits, has no -0 and refuses 1e131072 outright; a string keeps
    the text. The object is always an object, so a string in its column is never anything
    else (from_jsonb)."""
    return dumps_str(value) if _holds_json_number(value) else value


def from_jsonb(stored: dict[str, Any] | str) -> dict[str, Any]:
    """The object for_jsonb stored."""
    return loads(stored) if isinstance(stored, str) else stored


def _holds_json_number(value: Any) -> bool:
    # Asked of every attributes object a bulk write writes: a loop that passes strings
    # over without a call, not a generator per level (0.6 against 0.2 µs for a string).
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return isinstance(value, JsonNumber)
    for item in value:
        if type(item) is not str and _holds_json_number(item):
            return True
    return False


def _float(text: str) -> Decimal:
    if "e" in text or "E" in text or (text[0] == "-" and not text.strip("-0.")):
        return JsonNumber(text)
    return Decimal(text)


def _int(text: str) -> int | Decimal:
    if text == "-0":
        return JsonNumber(text)
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
_DECODER = json.JSONDecoder(parse_float=_float, parse_constant=Decimal, parse_int=_int)


def _default(value: Any) -> Any:
    if isinstance(value, JsonNumber):
        return orjson.Fragment(value.text)
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
