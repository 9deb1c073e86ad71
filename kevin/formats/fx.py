"""An FX trade as Kevin holds it, and as confirmations state it.

Kevin's FX trade: ``product`` is the currency pair (``EURUSD``: base ``EUR``, quote
``USD``), ``quantity`` the base currency amount, ``price`` the rate (quote currency per
unit of base) and ``currency`` the quote currency; ``side`` is whether the participant
buys or sells the base currency. A confirmation instead states the two amounts exchanged
and the rate, which is why reading one needs to know which currency is the base.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from iso4217 import Currency

from kevin.domain.errors import KevinError

# Wide enough for any amount or rate a confirmation carries (15 and 12 characters in
# SWIFT, a few dozen digits in FpML) multiplied together, with no rounding.
_EXACT = decimal.Context(prec=100)

# Market convention for the base of a pair (EURUSD, GBPUSD, USDJPY): the earlier in this
# list is the base. It decides only when a confirmation's amounts fit either reading (a
# rate within rounding of 1); currencies not listed rank after those listed.
CONVENTION = ("EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "NOK", "SEK", "DKK", "JPY")

# A counter amount agrees with base amount x rate within this fraction (some senders round
# the rate they show, not the amounts), or within one minor unit of its currency.
RELATIVE_TOLERANCE = Decimal("0.0001")


class NotRepresentable(KevinError):
    """The trade cannot be stated in this format."""

    code = "not_representable"


@functools.cache
def minor_units(code: str) -> int | None:
    """The ISO 4217 number of decimals of a currency; None for no currency, or one with
    no minor unit defined (gold, testing codes)."""
    try:
        return Currency(code).exponent
    except ValueError:
        return None


def is_currency(code: str) -> bool:
    return minor_units(code) is not None


@dataclass(frozen=True)
class Pair:
    base: str
    quote: str

    @property
    def product(self) -> str:
        return self.base + self.quote


def pair_of(product: str, currency: str) -> Pair:
    """The currency pair a trade's product names; NotRepresentable unless the product is
    two ISO 4217 currencies whose second is the trade's currency."""
    base, quote = product[:3], product[3:]
    if len(product) != 6 or not is_currency(base) or not is_currency(quote) or base == quote:
        raise NotRepresentable(
            f"product {product!r} is not a currency pair such as EURUSD",
            [{"field": "product", "message": "an FX confirmation needs a currency pair"}])
    if quote != currency:
        raise NotRepresentable(
            f"the currency of {product} must be its quote currency {quote}, not {currency}",
            [{"field": "currency", "message": f"must be {quote}"}])
    return Pair(base, quote)


def counter_amount(quantity: Decimal, price: Decimal, quote: str) -> Decimal:
    """quantity x price in the quote currency, rounded half up to its minor unit."""
    units = minor_units(quote) or 0
    return _EXACT.multiply(quantity, price).quantize(Decimal(1).scaleb(-units),
                                                     rounding=ROUND_HALF_UP, context=_EXACT)


def fits_currency(amount: Decimal, currency: str) -> bool:
    """No more decimals than the currency has (SWIFT's network rule C03)."""
    units = minor_units(currency)
    exponent = amount.as_tuple().exponent
    return units is not None and isinstance(exponent, int) and -exponent <= units


def _misfit(base_amount: Decimal, counter: Decimal, counter_currency: str,
            rate: Decimal) -> Decimal | None:
    """How far ``counter`` is from base_amount x rate, in tolerances (<= 1 agrees)."""
    units = minor_units(counter_currency) or 0
    tolerance = max(Decimal(1).scaleb(-units), _EXACT.multiply(counter, RELATIVE_TOLERANCE))
    distance = abs(_EXACT.subtract(_EXACT.multiply(base_amount, rate), counter))
    return _EXACT.divide(distance, tolerance)


def _rank(code: str) -> tuple[int, str]:
    return (CONVENTION.index(code) if code in CONVENTION else len(CONVENTION), code)


def base_of(first: str, first_amount: Decimal, second: str, second_amount: Decimal,
            rate: Decimal) -> str | None:
    """Which currency of an exchange is the base: the one whose amount times the rate
    gives the other's. When both readings agree with the amounts (a rate near 1 and
    amounts rounded to their minor units), market convention decides, never which of
    two roundings happens to land closer. None when neither reading agrees."""
    first_misfit = _misfit(first_amount, second_amount, second, rate)
    second_misfit = _misfit(second_amount, first_amount, first, rate)
    fits = [(_rank(code), misfit, code)
            for misfit, code in ((first_misfit, first), (second_misfit, second))
            if misfit is not None and misfit <= 1]
    return min(fits)[2] if fits else None
