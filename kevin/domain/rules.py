"""Matching rules per product: how far two sides of a trade may differ and still match.

Pure values, no I/O. Every comparison is exact decimal arithmetic (never binary floats),
and every tolerance is inclusive: a difference equal to the tolerance matches.

A product without rules matches exactly on every field (``Rules()``, the defaults).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Context, Decimal, Inexact, localcontext
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_serializer,
    model_validator,
)

from kevin.domain.models import DecimalText, UtcText, decimal_text
from kevin.domain.profiles import Cutoff
from kevin.domain.tolerances import (
    EXACT_FIELDS,
    AmountTolerance,
    DateTolerance,
    FieldTolerances,
    LocationTolerance,
)

BPS = Decimal(10_000)

# Prices and quantities have at most 38 digits with 18 after the point, so differences
# and products of two of them fit easily in 120 digits: with Inexact trapped, a rounded
# result would raise instead of silently deciding a match on an approximation.
EXACT = Context(prec=120, traps=[Inexact])
# Only for widening an index range (bps → price bounds), where a division is unavoidable;
# the bounds are rounded outwards and the exact test is applied on top of them.
_APPROX = Context(prec=60)

Tolerance = Annotated[
    Decimal,
    Field(ge=0, max_digits=38, decimal_places=18, allow_inf_nan=False,
          json_schema_extra={"type": "string", "examples": ["0.50"]}),
    DecimalText,
]

MAX_WINDOW_DAYS = 3660


class PriceTolerance(BaseModel):
    """``{"abs": "0.50"}`` (price units) or ``{"bps": "5"}`` (basis points of the resting
    trade's price) — exactly one of the two."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    abs: Tolerance | None = None
    bps: Tolerance | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PriceTolerance:
        if (self.abs is None) == (self.bps is None):
            raise ValueError('give exactly one of "abs" or "bps"')
        return self

    @model_serializer
    def _only_the_set_one(self) -> dict[str, str]:
        if self.bps is not None:
            return {"bps": decimal_text(self.bps)}
        assert self.abs is not None
        return {"abs": decimal_text(self.abs)}

    def allowed(self, resting_price: Decimal) -> Decimal:
        """The largest price difference that still matches against this resting price."""
        if self.abs is not None:
            return self.abs
        assert self.bps is not None
        with localcontext(EXACT):
            return resting_price * self.bps / BPS  # a division by 10^4 is always exact


class QuantityTolerance(BaseModel):
    """``{"abs": "0"}`` in quantity units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    abs: Tolerance

    @model_serializer
    def _plain(self) -> dict[str, str]:
        return {"abs": decimal_text(self.abs)}


class Rules(BaseModel):
    """The matching rules of one product. The defaults are exact matching on every field.

    Two spellings: today's ``{"price_tolerance", "quantity_tolerance",
    "settlement_date_window_days", "location"}``, or ``{"fields": {...}}`` with every
    tolerance form of kevin.domain.tolerances (the form matching profiles use). Not
    both. Either way ``tolerances`` is what matching applies; relative and asymmetric
    forms are seen from the *resting* trade: of the two, the one that entered the book
    first (see kevin.domain.matching.resting_of).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    price_tolerance: PriceTolerance | None = None
    quantity_tolerance: QuantityTolerance | None = None
    # Strict: lax mode would read false as 0 and "3" as 3.
    settlement_date_window_days: int | None = Field(default=None, ge=0, le=MAX_WINDOW_DAYS,
                                                    strict=True)
    location: Literal["exact", "ignore"] | None = None
    fields: FieldTolerances | None = None
    # When the product's trades should be matched by (kevin.domain.cutoffs); rules
    # without one give their trades no cut-off, and their bodies stay as they were.
    cutoff: Cutoff | None = None

    _tolerances: FieldTolerances = PrivateAttr(default=EXACT_FIELDS)

    @model_validator(mode="after")
    def _one_spelling(self) -> Rules:
        legacy = {name: getattr(self, name) for name in _LEGACY
                  if getattr(self, name) is not None}
        if self.fields is not None and legacy:
            raise ValueError(f"give either fields or {', '.join(legacy)}, not both")
        self._tolerances = self.fields if self.fields is not None else _from_legacy(self)
        return self

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any) -> Any:
        body = handler(self)
        if body.get("cutoff", False) is None:
            del body["cutoff"]
        if self.fields is not None:
            for name in _LEGACY:
                body.pop(name, None)
            return body
        body.pop("fields", None)
        for name, default in _LEGACY_DEFAULTS.items():
            if body.get(name) is None:
                body[name] = default
        return body

    @property
    def tolerances(self) -> FieldTolerances:
        # Read from the private store directly: pydantic's __getattr__ for a private
        # attribute is the slow path, and matching asks this once per candidate.
        found: FieldTolerances = self.__pydantic_private__["_tolerances"]  # type: ignore[index]
        return found

    def is_exact(self) -> bool:
        """Whether these rules match exactly on every field (the batch's fast path)."""
        t = self.tolerances
        return (_exact_amount(t.price) and _exact_amount(t.quantity)
                and t.settlement_date.within_days == 0 and t.location.mode == "exact")

    # --- the comparisons (inclusive) --------------------------------------------------

    def price_within(self, ours: Decimal, theirs: Decimal,
                     reference: Decimal | None = None) -> bool:
        """|ours - theirs| within the price tolerance, seen from ``reference`` (the
        resting trade's price: ``theirs`` unless given)."""
        resting = theirs if reference is None else reference
        other = ours if resting == theirs else theirs
        return self.tolerances.price.within(resting, other)

    # --- index ranges for the candidate query ------------------------------------------

    def price_bounds(self, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """Inclusive bounds on the prices that can match ``price``, whichever of the two
        rests: a superset for relative forms (rounded outwards), so the store can
        range-scan its index and then apply the exact test. ``None``: unbounded."""
        return self.tolerances.price.bounds(price)

    def quantity_bounds(self, quantity: Decimal) -> tuple[Decimal | None, Decimal | None]:
        return self.tolerances.quantity.bounds(quantity)

    def settlement_bounds(self, settlement: date) -> tuple[date, date]:
        return self.tolerances.settlement_date.bounds(settlement)


_LEGACY = ("price_tolerance", "quantity_tolerance", "settlement_date_window_days", "location")
_LEGACY_DEFAULTS: dict[str, Any] = {
    "price_tolerance": {"abs": "0"}, "quantity_tolerance": {"abs": "0"},
    "settlement_date_window_days": 0, "location": "exact"}


def _from_legacy(rules: Rules) -> FieldTolerances:
    price = rules.price_tolerance or PriceTolerance(abs=Decimal(0))
    quantity = rules.quantity_tolerance or QuantityTolerance(abs=Decimal(0))
    return FieldTolerances(
        price=AmountTolerance.model_validate(price.model_dump(mode="json")),
        quantity=AmountTolerance.model_validate(quantity.model_dump(mode="json")),
        settlement_date=DateTolerance(days=rules.settlement_date_window_days or 0),
        location=LocationTolerance.model_validate(rules.location or "exact"))


def _exact_amount(tolerance: AmountTolerance) -> bool:
    return tolerance.form == "exact" or (tolerance.form == "abs" and tolerance.amount == 0)


EXACT_RULES = Rules()


def _clamped(day: date, delta: timedelta) -> date:
    try:
        return day + delta
    except OverflowError:
        return date.max if delta > timedelta(0) else date.min


class RulesVersion(Rules):
    """One stored version of a product's rules, as ``GET /v1/rules/{product}`` returns it."""

    product: str
    version: int
    recorded_at: Annotated[AwareDatetime, UtcText]
    actor: str | None = Field(default=None, exclude=True)

    def rules(self) -> Rules:
        return _rules_of(self)


class RulesUpdate(Rules):
    """``PUT /v1/rules/{product}``: the full rules (omitted fields are exact). ``product``
    may be repeated but must then equal the one in the path."""

    product: str | None = None

    def rules(self) -> Rules:
        return _rules_of(self)


def _rules_of(given: Rules) -> Rules:
    return Rules(**{name: getattr(given, name) for name in Rules.model_fields})


def rules_from_json(body: Any) -> Rules:
    return Rules.model_validate(body)
