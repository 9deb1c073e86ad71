"""Tolerance forms: how far one field of two sides of a trade may differ and still match.

Pure values, no I/O. A matching profile or a product's rules give one form per field
(``FieldTolerances``); an omitted field is exact. Every comparison is exact decimal
arithmetic (relative forms are multiplied out, never divided), and every tolerance is
inclusive: a difference equal to it matches.

Forms that are not symmetric (``range``) and relative forms (``bps``, ``pct``) are seen
from the *resting* trade: of the two, the one that entered the book first. The callers
pass its value first (``within(resting, other)``).

Each form also gives the candidate search its window (``bounds``): every value that can
match a given one, whichever of the two rests. The PostgreSQL book range-scans its index
over that window and applies the exact test on top, so each form must have one
(``ignore``: unbounded).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_CEILING, Context, Decimal, Inexact, localcontext
from functools import lru_cache
from typing import Annotated, Any, Literal

import holidays
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from kevin.domain.models import DecimalText, decimal_text

# Prices and quantities have at most 38 digits with 18 after the point, so differences
# and products of two of them fit easily in 120 digits: with Inexact trapped, a rounded
# result would raise instead of silently deciding a match on an approximation.
EXACT = Context(prec=120, traps=[Inexact])
# Only for widening an index window (a relative form's upper bound), where a division is
# unavoidable; the bound is rounded outwards and the exact test applies on top of it.
_APPROX = Context(prec=60)

BPS = Decimal(10_000)
PCT = Decimal(100)

Amount = Annotated[
    Decimal,
    Field(ge=0, max_digits=38, decimal_places=18, allow_inf_nan=False,
          json_schema_extra={"type": "string", "examples": ["0.50"]}),
    DecimalText,
]

# Business days beyond a month of them are no longer a settlement tolerance; calendar
# days are allowed up to ten years, as product rules always allowed.
MAX_BUSINESS_DAYS = 31
MAX_DAYS = 3660

AmountFormName = Literal["exact", "ignore", "abs", "bps", "pct", "range"]
_RELATIVE_UNIT = {"bps": BPS, "pct": PCT}
_AMOUNT = TypeAdapter(Amount)


def _amount(key: str, value: Any) -> Decimal:
    """One amount of a form, its error naming the key the user wrote (not ours)."""
    try:
        return _AMOUNT.validate_python(value)
    except ValidationError as error:
        raise ValueError(f"{key}: {error.errors()[0]['msg']}") from None

_AMOUNT_KEYS = ("abs", "bps", "pct", "range")


class AmountTolerance(BaseModel):
    """A price or quantity tolerance, one of:

    - ``"exact"`` — equal; ``"ignore"`` — never compared;
    - ``{"abs": x}`` — |ours - theirs| <= x;
    - ``{"bps": x}``, ``{"pct": x}`` — |ours - theirs| <= x basis points / percent of the
      resting trade's value, optionally capped by ``"max_abs": m``;
    - ``{"range": {"below": b, "above": a}}`` — the other trade's value may be up to ``b``
      under the resting trade's and up to ``a`` over it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    form: AmountFormName
    amount: Amount | None = None
    max_abs: Amount | None = None
    below: Amount | None = None
    above: Amount | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_public_form(cls, data: Any) -> Any:
        if isinstance(data, AmountTolerance):
            return data
        if data in ("exact", "ignore"):
            return {"form": data}
        if not isinstance(data, dict):
            raise ValueError('expected "exact", "ignore", or an object such as {"abs": "0.5"}')
        if "form" in data:  # already the internal shape (model_copy, round trips)
            return data
        given = [key for key in _AMOUNT_KEYS if key in data]
        unknown = sorted(set(data) - {*_AMOUNT_KEYS, "max_abs"})
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected one of abs, "
                             "bps, pct (optionally with max_abs) or range")
        if len(given) != 1:
            raise ValueError("give exactly one of abs, bps, pct or range")
        form = given[0]
        if "max_abs" in data and form not in _RELATIVE_UNIT:
            raise ValueError("max_abs caps a relative form (bps or pct) only")
        if form == "range":
            bounds = data["range"]
            if not isinstance(bounds, dict) or set(bounds) != {"below", "above"}:
                raise ValueError('range is {"below": x, "above": y}')
            return {"form": "range", "below": _amount("range.below", bounds["below"]),
                    "above": _amount("range.above", bounds["above"])}
        # A max_abs given must be an amount (null is not "no cap": leave the key out).
        return {"form": form, "amount": _amount(form, data[form]),
                "max_abs": _amount("max_abs", data["max_abs"]) if "max_abs" in data else None}

    @model_validator(mode="after")
    def _complete(self) -> AmountTolerance:
        needs_amount = self.form in ("abs", "bps", "pct")
        if needs_amount != (self.amount is not None):
            raise ValueError(f"{self.form} takes {'an' if needs_amount else 'no'} amount")
        if (self.form == "range") != (self.below is not None and self.above is not None):
            raise ValueError("range needs below and above")
        return self

    @model_serializer
    def _public_form(self) -> str | dict[str, Any]:
        if self.form in ("exact", "ignore"):
            return self.form
        if self.form == "range":
            assert self.below is not None and self.above is not None
            return {"range": {"below": decimal_text(self.below),
                              "above": decimal_text(self.above)}}
        assert self.amount is not None
        public: dict[str, str] = {self.form: decimal_text(self.amount)}
        if self.max_abs is not None:
            public["max_abs"] = decimal_text(self.max_abs)
        return public

    # --- the exact test ------------------------------------------------------------------

    def within(self, resting: Decimal, other: Decimal) -> bool:
        """Whether ``other`` matches ``resting`` (the resting trade's value), inclusive."""
        # The context's methods, not a localcontext block: matching asks this for every
        # candidate it weighs, and entering a context costs more than the arithmetic.
        # Comparisons, copy_abs and copy_negate are exact in any context.
        form = self.form
        if form == "ignore":
            return True
        if form == "exact":
            return other == resting
        difference = EXACT.subtract(other, resting)
        if form == "range":
            assert self.below is not None and self.above is not None
            return self.below.copy_negate() <= difference <= self.above
        assert self.amount is not None
        gap = difference.copy_abs()
        if self.max_abs is not None and gap > self.max_abs:
            return False
        if form == "abs":
            return gap <= self.amount
        # |d| <= resting * amount / unit, multiplied out: no division rounds.
        return (EXACT.multiply(gap, _RELATIVE_UNIT[form])
                <= EXACT.multiply(resting, self.amount))

    # --- the window the candidate search scans ---------------------------------------------

    def bounds(self, value: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """Inclusive bounds on every value ``c`` that can match ``value``, whether ``c`` or
        ``value`` is the resting one: exact for absolute forms, a superset (rounded
        outwards) for relative ones. ``None``: unbounded on that side."""
        form = self.form
        if form == "ignore":
            return None, None
        if form == "exact":
            return value, value
        # The absolute forms through the context's methods, as ``within``: a replay's walk
        # asks this of most trades, and entering a context costs more than the arithmetic.
        if form == "range":
            assert self.below is not None and self.above is not None
            # c resting: value - above <= c <= value + below; value resting: value -
            # below <= c <= value + above. The union of two windows around value:
            reach = max(self.below, self.above)
            return EXACT.subtract(value, reach), EXACT.add(value, reach)
        assert self.amount is not None
        if form == "abs":
            return EXACT.subtract(value, self.amount), EXACT.add(value, self.amount)
        with localcontext(EXACT):
            low, high = _relative_bounds(value, self.amount, _RELATIVE_UNIT[self.form])
            if self.max_abs is not None:
                low = max(low, value - self.max_abs)
                high = value + self.max_abs if high is None else min(high, value + self.max_abs)
            return low, high

    # --- how it reads in a mismatch ----------------------------------------------------------

    def text(self, resting: Decimal) -> str | None:
        """The tolerance a mismatch entry states: the largest difference allowed against
        this resting value, ``-below/+above`` for a range, None when nothing is allowed
        to differ by an amount (ignore never mismatches)."""
        if self.form == "exact":
            return "0"
        if self.form == "ignore":
            return None
        if self.form == "range":
            assert self.below is not None and self.above is not None
            return f"-{decimal_text(self.below)}/+{decimal_text(self.above)}"
        assert self.amount is not None
        if self.form == "abs":
            allowed = self.amount
        else:
            with localcontext(EXACT):  # a division by 10^2 or 10^4 is always exact
                allowed = resting * self.amount / _RELATIVE_UNIT[self.form]
            if self.max_abs is not None:
                allowed = min(allowed, self.max_abs)
        return decimal_text(allowed)


def _relative_bounds(value: Decimal, amount: Decimal,
                     unit: Decimal) -> tuple[Decimal, Decimal | None]:
    # Resting = the other value c: |v - c| <= c*f <=> v/(1+f) <= c <= v/(1-f);
    # resting = v: v(1-f) <= c <= v(1+f). The union: [v(1-f), v/(1-f)] (f = amount/unit).
    with localcontext(EXACT):
        low = value * (unit - amount) / unit  # a division by 10^2 or 10^4: exact
    if amount >= unit:
        return low, None
    with localcontext(_APPROX) as ctx:
        ctx.rounding = ROUND_CEILING
        high = value * unit / (unit - amount)
    return low, high


EXACT_AMOUNT = AmountTolerance(form="exact")

# The public JSON forms, for the OpenAPI document (the models parse them into an internal
# shape that is nobody's business).
_DECIMAL = {"type": ["string", "number"], "pattern": r"^[0-9]+(\.[0-9]+)?$",
            "examples": ["0.50"]}
_AMOUNT_SCHEMA: dict[str, Any] = {
    "description": AmountTolerance.__doc__,
    "oneOf": [
        {"enum": ["exact", "ignore"]},
        {"type": "object", "properties": {"abs": _DECIMAL}, "required": ["abs"],
         "additionalProperties": False},
        *({"type": "object", "properties": {unit: _DECIMAL, "max_abs": _DECIMAL},
           "required": [unit], "additionalProperties": False} for unit in ("bps", "pct")),
        {"type": "object", "additionalProperties": False, "required": ["range"],
         "properties": {"range": {"type": "object", "additionalProperties": False,
                                  "required": ["below", "above"],
                                  "properties": {"below": _DECIMAL, "above": _DECIMAL}}}},
    ],
}


def _public_schema(schema: dict[str, Any]) -> Any:
    def get(cls: type, core_schema: Any, handler: Any) -> dict[str, Any]:
        return schema
    return classmethod(get)


AmountTolerance.__get_pydantic_json_schema__ = _public_schema(_AMOUNT_SCHEMA)  # type: ignore[method-assign]


# --- calendars ---------------------------------------------------------------------------

CalendarName = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,5}(-[A-Z0-9]{1,6})?$")]


@lru_cache(maxsize=256)
def holiday_calendar(name: str) -> holidays.HolidayBase:
    """A holiday calendar from the ``holidays`` library: a financial market (``XLON``,
    ``NYSE``, ``ECB``), a country (``GB``, ``US``) or a country's subdivision (``GB-ENG``,
    ``US-NY``). Raises ValueError for a name the library does not know."""
    if name in holidays.list_supported_financial():
        return holidays.financial_holidays(name)
    country, _, subdivision = name.partition("-")
    try:
        return holidays.country_holidays(country, subdiv=subdivision or None)
    except NotImplementedError as error:
        raise ValueError(f"unknown calendar {name!r}: {error}") from None


def is_business_day(calendar: holidays.HolidayBase, day: date) -> bool:
    return bool(calendar.is_working_day(day))


def shift_business_days(calendar: holidays.HolidayBase, day: date, count: int) -> date:
    """The ``|count|``-th business day after (count > 0) or before (count < 0) ``day``;
    ``day`` itself when count is 0. Clamped at the ends of the date range."""
    step = timedelta(days=1 if count > 0 else -1)
    remaining = abs(count)
    while remaining:
        try:
            day += step
        except OverflowError:
            return date.max if count > 0 else date.min
        if is_business_day(calendar, day):
            remaining -= 1
    return day


class DateTolerance(BaseModel):
    """A settlement date tolerance: ``"exact"``, ``"ignore"``, ``{"days": n}`` (calendar
    days either way) or ``{"business_days": n, "calendar": C}``: the later date at most
    the n-th business day of calendar C after the earlier one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Strict: lax mode would read false as 0 and "3" as 3.
    days: int | None = Field(default=None, ge=0, le=MAX_DAYS, strict=True)
    business_days: int | None = Field(default=None, ge=0, le=MAX_BUSINESS_DAYS, strict=True)
    calendar: CalendarName | None = None
    ignore: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_public_form(cls, data: Any) -> Any:
        if data == "exact":
            return {"days": 0}
        if data == "ignore":
            return {"ignore": True}
        if isinstance(data, dict) and "ignore" in data:
            raise ValueError('write "ignore", not an object')
        return data

    @model_validator(mode="after")
    def _one_form(self) -> DateTolerance:
        if self.ignore:
            return self
        if (self.days is None) == (self.business_days is None):
            raise ValueError('give "days" or "business_days" (with "calendar")')
        if (self.business_days is None) != (self.calendar is None):
            raise ValueError('"calendar" goes with "business_days", and it needs one')
        return self

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, name: str | None) -> str | None:
        if name is not None:
            holiday_calendar(name)  # raises ValueError naming it
        return name

    @model_serializer
    def _public_form(self) -> str | dict[str, Any]:
        if self.ignore:
            return "ignore"
        if self.business_days is not None:
            return {"business_days": self.business_days, "calendar": self.calendar}
        return {"days": self.days}

    def _shift(self, day: date, count: int) -> date:
        if self.business_days is not None:
            assert self.calendar is not None
            return shift_business_days(holiday_calendar(self.calendar), day, count)
        try:
            return day + timedelta(days=count)
        except OverflowError:
            return date.max if count > 0 else date.min

    @property
    def within_days(self) -> int | None:
        """The calendar-day reach of a ``days`` form (None for the others)."""
        return None if self.ignore or self.business_days is not None else self.days

    def _reach(self) -> int:
        return self.business_days if self.business_days is not None else self.days or 0

    def within(self, ours: date, theirs: date) -> bool:
        """Symmetric: the later date no further than the tolerance after the earlier."""
        if self.ignore or ours == theirs:  # a date is within any tolerance of itself
            return True
        earlier, later = sorted((ours, theirs))
        return later <= self._shift(earlier, self._reach())

    def bounds(self, day: date) -> tuple[date, date]:
        """Exactly the dates that match ``day``: ``within(day, c)`` iff c is in the window.
        (The n-th business day before ``day`` is the earliest date whose n-th business day
        after it is not before ``day``.)"""
        if self.ignore:
            return date.min, date.max
        reach = self._reach()
        return self._shift(day, -reach), self._shift(day, reach)

    def text(self) -> str | None:
        if self.ignore:
            return None
        if self.business_days is not None:
            return f"{self.business_days} business days ({self.calendar})"
        return str(self.days)


EXACT_DATE = DateTolerance(days=0)
DateTolerance.__get_pydantic_json_schema__ = _public_schema({  # type: ignore[method-assign]
    "description": DateTolerance.__doc__,
    "oneOf": [
        {"enum": ["exact", "ignore"]},
        {"type": "object", "additionalProperties": False, "required": ["days"],
         "properties": {"days": {"type": "integer", "minimum": 0, "maximum": MAX_DAYS}}},
        {"type": "object", "additionalProperties": False,
         "required": ["business_days", "calendar"],
         "properties": {"business_days": {"type": "integer", "minimum": 0,
                                          "maximum": MAX_BUSINESS_DAYS},
                        "calendar": {"type": "string", "examples": ["GB", "US-NY", "XLON"],
                                     "description": "a calendar of the holidays library: "
                                     "a country, a country-subdivision or a market"}}},
    ],
})

LocationName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class LocationTolerance(BaseModel):
    """``"exact"``, ``"ignore"``, or ``{"equivalent": [["LDN", "LONDON"], ...]}``: equal,
    or both in one of the sets (a location belongs to at most one set)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["exact", "ignore", "equivalent"]
    equivalent: tuple[tuple[LocationName, ...], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_public_form(cls, data: Any) -> Any:
        if data in ("exact", "ignore"):
            return {"mode": data}
        if isinstance(data, dict) and "mode" not in data:
            if set(data) != {"equivalent"}:
                raise ValueError('expected "exact", "ignore" or {"equivalent": [[...], ...]}')
            return {"mode": "equivalent", "equivalent": data["equivalent"]}
        return data

    @model_validator(mode="after")
    def _disjoint_sets(self) -> LocationTolerance:
        if self.mode != "equivalent":
            if self.equivalent:
                raise ValueError(f"{self.mode} takes no sets")
            return self
        if not self.equivalent:
            raise ValueError("equivalent needs at least one set")
        seen: set[str] = set()
        for group in self.equivalent:
            if len(set(group)) < 2:
                raise ValueError("each equivalent set names at least two locations")
            overlap = seen & set(group)
            if overlap:
                raise ValueError(f"{sorted(overlap)[0]} is in two equivalent sets; "
                                 "merge them into one")
            seen |= set(group)
        return self

    @model_serializer
    def _public_form(self) -> str | dict[str, Any]:
        if self.mode != "equivalent":
            return self.mode
        return {"equivalent": [list(group) for group in self.equivalent]}

    def matching(self, location: str | None) -> frozenset[str | None] | None:
        """Every location that matches ``location`` (None: any location at all)."""
        if self.mode == "ignore":
            return None
        for group in self.equivalent:
            if location in group:
                return frozenset(group)
        return frozenset({location})

    def within(self, ours: str | None, theirs: str | None) -> bool:
        if ours == theirs:  # equal locations match under every mode
            return True
        allowed = self.matching(ours)
        return allowed is None or theirs in allowed


EXACT_LOCATION = LocationTolerance(mode="exact")
LocationTolerance.__get_pydantic_json_schema__ = _public_schema({  # type: ignore[method-assign]
    "description": LocationTolerance.__doc__,
    "oneOf": [
        {"enum": ["exact", "ignore"]},
        {"type": "object", "additionalProperties": False, "required": ["equivalent"],
         "properties": {"equivalent": {
             "type": "array", "minItems": 1,
             "items": {"type": "array", "minItems": 2, "uniqueItems": True,
                       "items": {"type": "string", "minLength": 1, "maxLength": 64}}}}},
    ],
})

TOLERANCE_FIELDS = ("price", "quantity", "settlement_date", "location")


class FieldTolerances(BaseModel):
    """One form per compared field; an omitted field is exact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    price: AmountTolerance = EXACT_AMOUNT
    quantity: AmountTolerance = EXACT_AMOUNT
    settlement_date: DateTolerance = EXACT_DATE
    location: LocationTolerance = EXACT_LOCATION

    def price_window(self, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
        return self.price.bounds(price)

    def failing(self, resting: Any, other: Any) -> list[str]:
        """The fields on which ``other`` is outside tolerance of ``resting`` (anything
        with price, quantity, settlement_date and location), in TOLERANCE_FIELDS order."""
        failed = []
        if not self.price.within(resting.price, other.price):
            failed.append("price")
        if not self.quantity.within(resting.quantity, other.quantity):
            failed.append("quantity")
        if not self.settlement_date.within(resting.settlement_date, other.settlement_date):
            failed.append("settlement_date")
        if not self.location.within(resting.location, other.location):
            failed.append("location")
        return failed

    def text(self, field: str, resting: Any) -> str | None:
        """The tolerance of ``field`` as a mismatch entry states it."""
        if field == "price":
            return self.price.text(resting.price)
        if field == "quantity":
            return self.quantity.text(resting.quantity)
        if field == "settlement_date":
            return self.settlement_date.text()
        return None  # location: equal or equivalent, there is no amount to state


EXACT_FIELDS = FieldTolerances()

