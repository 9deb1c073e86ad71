"""Matching rules per product: how far two sides of a trade may differ and still match.

Pure values, no I/O. Every comparison is exact decimal arithmetic (never binary floats),
and every tolerance is inclusive: a difference equal to the tolerance matches.

A product without rules matches exactly on every field (``Rules()``, the defaults).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_CEILING, Context, Decimal, Inexact, localcontext
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_serializer,
    model_validator,
)

from kevin.domain.models import DecimalText, UtcText, decimal_text

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

    A bps ``price_tolerance`` is relative to the *resting* trade's price: of the two, the
    one that entered the book first (see kevin.domain.matching.reference_price).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    price_tolerance: PriceTolerance = PriceTolerance(abs=Decimal(0))
    quantity_tolerance: QuantityTolerance = QuantityTolerance(abs=Decimal(0))
    # Strict: lax mode would read false as 0 and "3" as 3.
    settlement_date_window_days: int = Field(default=0, ge=0, le=MAX_WINDOW_DAYS, strict=True)
    location: Literal["exact", "ignore"] = "exact"

    # --- the comparisons (inclusive) --------------------------------------------------

    def price_within(self, ours: Decimal, theirs: Decimal,
                     reference: Decimal | None = None) -> bool:
        """|ours - theirs| within the tolerance; bps are of ``reference`` (the resting
        trade's price), ``theirs`` unless given."""
        reference = theirs if reference is None else reference
        with localcontext(EXACT):
            if self.price_tolerance.bps is not None:
                # |ours - theirs| <= reference * bps / 10^4, multiplied out: no division.
                return abs(ours - theirs) * BPS <= reference * self.price_tolerance.bps
            assert self.price_tolerance.abs is not None
            return abs(ours - theirs) <= self.price_tolerance.abs

    def quantity_within(self, ours: Decimal, theirs: Decimal) -> bool:
        with localcontext(EXACT):
            return abs(ours - theirs) <= self.quantity_tolerance.abs

    def settlement_within(self, ours: date, theirs: date) -> bool:
        return abs((ours - theirs).days) <= self.settlement_date_window_days

    def location_within(self, ours: str | None, theirs: str | None) -> bool:
        return self.location == "ignore" or ours == theirs

    # --- index ranges for the candidate query ------------------------------------------

    def price_bounds(self, price: Decimal) -> tuple[Decimal, Decimal | None]:
        """Inclusive bounds on the prices that can match ``price``, whichever of the two
        is the reference: a superset for bps (rounded outwards), so the store can
        range-scan its index and then apply the exact test. ``None``: unbounded above."""
        tol = self.price_tolerance
        if tol.abs is not None:
            with localcontext(EXACT):
                return price - tol.abs, price + tol.abs
        assert tol.bps is not None
        # Reference = the other price c: |p - c| <= c*b/10^4 <=> p/(1+b') <= c <= p/(1-b');
        # reference = p: p(1-b') <= c <= p(1+b'). The union: [p(1-b'), p/(1-b')].
        with localcontext(EXACT):
            low = price * (BPS - tol.bps) / BPS
        if tol.bps >= BPS:
            return low, None
        with localcontext(_APPROX) as ctx:
            ctx.rounding = ROUND_CEILING
            high = price * BPS / (BPS - tol.bps)
        return low, high

    def quantity_bounds(self, quantity: Decimal) -> tuple[Decimal, Decimal]:
        with localcontext(EXACT):
            return quantity - self.quantity_tolerance.abs, quantity + self.quantity_tolerance.abs

    def settlement_bounds(self, settlement: date) -> tuple[date, date]:
        window = timedelta(days=self.settlement_date_window_days)
        return _clamped(settlement, -window), _clamped(settlement, window)

    # --- how the tolerances read in a mismatch -----------------------------------------

    def tolerance_text(self, field: str, resting_price: Decimal) -> str | None:
        if field == "price":
            return decimal_text(self.price_tolerance.allowed(resting_price))
        if field == "quantity":
            return decimal_text(self.quantity_tolerance.abs)
        if field == "settlement_date":
            return str(self.settlement_date_window_days)
        return None  # location: exact, there is no amount to state


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
        return Rules.model_validate(self.model_dump(include=set(Rules.model_fields)))


class RulesUpdate(Rules):
    """``PUT /v1/rules/{product}``: the full rules (omitted fields are exact). ``product``
    may be repeated but must then equal the one in the path."""

    product: str | None = None

    def rules(self) -> Rules:
        return Rules.model_validate(self.model_dump(include=set(Rules.model_fields)))


def rules_from_json(body: Any) -> Rules:
    return Rules.model_validate(body)
