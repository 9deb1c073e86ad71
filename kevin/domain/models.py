"""Immutable values of the domain: what a participant submits and what Kevin stores.

Decimals stay ``Decimal`` end to end; they are written as strings in plain notation.
Times are timezone-aware UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from kevin import jsoncodec
from kevin.domain.notes import KeyLabel

M = TypeVar("M", bound=BaseModel)

Side = Literal["buy", "sell"]
Status = Literal["unmatched", "matched", "mismatched", "cancelled"]
Reason = Literal[
    "submitted", "amended", "cancelled", "matched", "mismatched",
    "unmatched", "forced", "broken", "replayed", "agreed",
]

TRADE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
# A new trade's id has a character other than a dot: HTTP clients rewrite "." and ".."
# path segments (RFC 3986 §5.2.4), so /v1/trades/../versions could never reach it.
NEW_TRADE_ID_PATTERN = r"^[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*$"
PARTICIPANT_PATTERN = r"^[A-Z0-9_]{1,32}$"
PRODUCT_PATTERN = r"^[A-Za-z0-9._/-]{1,32}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"

# TradeId names a trade that may exist (ids of only dots were once accepted);
# NewTradeId is what a submission may use.
TradeId = Annotated[str, StringConstraints(pattern=TRADE_ID_PATTERN)]
NewTradeId = Annotated[str, StringConstraints(pattern=NEW_TRADE_ID_PATTERN, max_length=64)]
ParticipantName = Annotated[str, StringConstraints(pattern=PARTICIPANT_PATTERN)]


def decimal_text(value: Decimal) -> str:
    """Plain notation, the digits as given: ``Decimal('1E+2')`` → ``"100"``."""
    return format(value, "f")


def utc_text(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-21T10:00:00.123456Z``. (isoformat
    costs two thirds of strftime, a visible part of a batch's answer; strftime kept
    for years before 1000, which it writes unpadded.)"""
    utc = value.astimezone(UTC)
    if utc.year < 1000:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:26] + "Z"


def storable_text(value: str) -> str:
    """PostgreSQL cannot store NUL in text or jsonb: refused here, per field, so that one
    bad line of a batch spoils no other (the database would refuse the whole statement)."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000)")
    return value


# The limits that keep one client's trade from hurting others (docs/api.md, Conventions):
# every feed update then fits any transport Kevin relays to.
MAX_TRADE_JSON_BYTES = 64 * 1024
MAX_ATTRIBUTES_DEPTH = 16  # the attributes object itself is the first level
MAX_NUMBER_CHARS = 40
# Every field but `attributes` is bounded by its pattern or length (the longest, location,
# is 64 characters of at most 6 bytes each as JSON): together they stay under this, so a
# trade whose attributes take less than the rest of the limit needs no exact measure.
_BOUNDED_FIELDS_BYTES = 4 * 1024


def _refused(loc: tuple[str | int, ...], kind: str, message: str) -> ValidationError:
    """A validation error at ``loc`` under the field being validated, so the 422 names the
    very attribute (``attributes.legs.0.qty``), not just the field."""
    return ValidationError.from_exception_data("attributes", [InitErrorDetails(
        type=PydanticCustomError(kind, message), loc=loc, input=None)])


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    """Attributes are stored and given back as sent, within the limits above. JSON has no
    NaN or Infinity, and PostgreSQL's jsonb no NUL character. The walk stops at the first
    level past the depth limit and once the text it has seen passes the size limit, so a
    refused body costs no more than an accepted one."""
    seen = 0
    stack: list[tuple[tuple[str | int, ...], Any, int]] = [((), value, 1)]
    while stack:
        loc, item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_ATTRIBUTES_DEPTH:
                raise _refused(loc, "attributes_too_deep",
                               f"attributes are nested at most {MAX_ATTRIBUTES_DEPTH} deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    storable_text(key)
                    seen += len(key) + 4
                    stack.append(((*loc, key), child, depth + 1))
            else:
                seen += 1 + len(item)
                stack.extend(((*loc, i), child, depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            storable_text(item)
            seen += len(item) + 2
        elif isinstance(item, int | float | Decimal) and not isinstance(item, bool):
            if isinstance(item, Decimal | float) and not Decimal(item).is_finite():
                raise ValueError("numbers must be finite")
            text = jsoncodec.number_text(item)
            if len(text) > MAX_NUMBER_CHARS:
                raise _refused(loc, "number_too_long",
                               f"a number in attributes is at most {MAX_NUMBER_CHARS} "
                               f"characters as written, not {len(text)}")
            seen += len(text)
        if seen > MAX_TRADE_JSON_BYTES:
            raise _refused((), "trade_too_large",
                           f"a trade is at most {MAX_TRADE_JSON_BYTES} bytes as JSON; "
                           "its attributes alone are larger")
    return value


def trusted(model: type[M], values: dict[str, Any]) -> M:
    """An instance of ``model`` from values known to be valid (read back from Kevin's own
    table, or fields of an instance already validated): what model_construct does, at a
    fifth of its cost — a hot path when a batch handles tens of thousands of trades.
    ``values`` must name every field."""
    instance = _new(model)
    _set_attribute(instance, "__dict__", values)
    fields = _every_field.get(model, _UNSEEN)
    if fields is _UNSEEN:
        fields = _every_field[model] = _shared_fields_set(model)
    _set_fields_set(instance, fields if fields is not None and len(values) == len(fields)
                    else set(values))
    _set_extra(instance, None)
    _set_private(instance, None)
    return instance


# Every field is set on an instance ``trusted`` builds, so the instances of a frozen model
# share one set of its field names rather than each building its own (a Trade's is a
# set of 21 names, larger than its __dict__; building it was a third of trusted's
# cost). Pydantic adds to an instance's set only when a field is assigned, which a
# frozen model refuses, and ``model_copy`` copies the set before updating it. None for a
# model whose instances each need their own: not frozen, or taking extra fields (an
# assignment could add a name to a shared set); and a values dict naming fewer fields
# than the model has (not as trusted is meant to be called) gets its own as before.
_every_field: dict[type[BaseModel], set[str] | None] = {}
_UNSEEN: Any = object()


def _shared_fields_set(model: type[BaseModel]) -> set[str] | None:
    config = model.model_config
    if not config.get("frozen") or config.get("extra") == "allow":
        return None
    return set(model.model_fields)


# trusted's steps, looked up once: BaseModel's slots set through their descriptors (what
# object.__setattr__ finds by name each time), a third of its cost.
_new = object.__new__
_set_attribute = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


DecimalText = PlainSerializer(decimal_text, return_type=str)
UtcText = PlainSerializer(utc_text, return_type=str)
# Decimal text as a request may spell it: ASCII digits, an optional sign, fraction and
# exponent. Python's Decimal() would also take "1_000", " 1 " and non-ASCII digits;
# amounts on a confirmation should not.
DECIMAL_TEXT_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _plain_decimal_text(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(DECIMAL_TEXT_PATTERN, value):
        raise ValueError("expected a decimal number such as \"1000.25\"")
    return value


Amount = Annotated[
    Decimal,
    Field(gt=0, max_digits=38, decimal_places=18, allow_inf_nan=False),
    BeforeValidator(_plain_decimal_text),
    DecimalText,
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": DECIMAL_TEXT_PATTERN}],
                    "examples": ["1000.25"]}, mode="validation"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
                    "examples": ["1000.25"]}, mode="serialization"),
]
Attributes = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


def _date_text(value: Any) -> Any:
    """Dates arrive as YYYY-MM-DD; lax pydantic would also read 0 as 1970-01-01."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # already a date: a row from the store
    raise ValueError("expected a date as YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_date_text)]

RFC3339_PATTERN = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                   r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _instant_text(value: Any) -> Any:
    """Instants arrive as RFC 3339 text with a zone; lax pydantic would read 0 as 1970."""
    if isinstance(value, str) and re.fullmatch(RFC3339_PATTERN, value):
        return value
    if isinstance(value, datetime):
        return value
    raise ValueError("expected an RFC 3339 timestamp with a zone, e.g. 2026-11-21T10:00:00Z")


def in_utc(value: datetime) -> datetime:
    """The instant in UTC. 0001-01-01T00:00:00+01:00 is valid RFC 3339 but lies in year 0,
    which neither Python nor the driver can carry: refused, never a 500."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant lies outside the years 1 to 9999 in UTC") from None


Instant = Annotated[AwareDatetime, BeforeValidator(_instant_text), AfterValidator(in_utc)]


class TradeTerms(BaseModel):
    """The fields a participant states about a trade (everything but its id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    counterparty: ParticipantName
    side: Side
    product: Annotated[str, StringConstraints(pattern=PRODUCT_PATTERN)]
    quantity: Amount
    price: Amount
    currency: Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
    trade_date: IsoDate
    settlement_date: IsoDate
    location: Annotated[str, StringConstraints(min_length=1, max_length=64),
                        AfterValidator(storable_text)] | None = None
    attributes: Attributes = Field(default_factory=dict)

    @model_validator(mode="after")
    def _at_most_64_kib(self) -> Self:
        """A trade is at most MAX_TRADE_JSON_BYTES as Kevin writes it; only attributes can
        make it so large, so they are named."""
        if len(jsoncodec.dumps(self.attributes)) > MAX_TRADE_JSON_BYTES - _BOUNDED_FIELDS_BYTES:
            size = len(jsoncodec.dumps(self.model_dump(mode="python")))
            if size > MAX_TRADE_JSON_BYTES:
                raise _refused(("attributes",), "trade_too_large",
                               f"a trade is at most {MAX_TRADE_JSON_BYTES} bytes as JSON, "
                               f"not {size}; its attributes make it so large")
        return self


# The terms that matter for matching; `attributes` is stored and returned, never matched.
ECONOMIC_FIELDS = (
    "counterparty", "side", "product", "quantity", "price", "currency",
    "trade_date", "settlement_date", "location",
)
TERM_FIELDS = (*ECONOMIC_FIELDS, "attributes")


def differing_fields(a: TradeTerms, b: TradeTerms) -> list[str]:
    """The term fields whose values differ (decimals compare by value: 100 == 100.0)."""
    return [name for name in TERM_FIELDS if getattr(a, name) != getattr(b, name)]


class TradeSubmission(TradeTerms):
    """``POST /v1/trades``: a new trade, or an idempotent resubmission of one."""

    trade_id: NewTradeId


# plain_submission's forms: each a subset of what validation accepts, converted as it
# converts it. An amount of at most 20 + 18 digits is within max_digits and
# decimal_places however they are counted.
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,18})?")
_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PARTICIPANT = re.compile(PARTICIPANT_PATTERN)
_PRODUCT = re.compile(PRODUCT_PATTERN)
_CURRENCY = re.compile(CURRENCY_PATTERN)
_NEW_TRADE_ID = re.compile(NEW_TRADE_ID_PATTERN)
_SUBMISSION_FIELDS = frozenset(TradeSubmission.model_fields)


def plain_submission(data: Any) -> TradeSubmission | None:
    """``TradeSubmission.model_validate(data)`` for data in the plainest valid form — an
    object of the model's fields, amounts as decimal text, dates as YYYY-MM-DD, the
    attributes holding no float and no integer zero (JSON parsed by orjson: its floats
    would not be exact, its 0 may have been ``-0``) — checked and built without
    pydantic's validation, which costs twice as much. None for anything else,
    valid or not: validating it as usual is then the only way to the same result or the
    same errors (tests/test_plain_submission.py holds the two to each other)."""
    if type(data) is not dict or not data.keys() <= _SUBMISSION_FIELDS:
        return None
    try:
        counterparty, side, product = data["counterparty"], data["side"], data["product"]
        currency, trade_id = data["currency"], data["trade_id"]
        quantity, price = _plain_amount(data["quantity"]), _plain_amount(data["price"])
        trade_date = _plain_date(data["trade_date"])
        settlement_date = _plain_date(data["settlement_date"])
    except KeyError:  # a required field missing
        return None
    location, attributes = data.get("location"), data.get("attributes", _ABSENT)
    if not (type(counterparty) is str
            and (counterparty in _known_participants
                 or _learned(counterparty, _PARTICIPANT, _known_participants))
            and (side == "buy" or side == "sell") and type(side) is str
            and type(product) is str
            and (product in _known_products or _learned(product, _PRODUCT, _known_products))
            and type(currency) is str
            and (currency in _known_currencies
                 or _learned(currency, _CURRENCY, _known_currencies))
            and type(trade_id) is str and len(trade_id) <= 64
            and _NEW_TRADE_ID.fullmatch(trade_id)
            and (location is None or (type(location) is str and 1 <= len(location) <= 64
                                      and "\x00" not in location))):
        return None
    if quantity is None or price is None or trade_date is None or settlement_date is None:
        return None
    if attributes is _ABSENT:
        attributes = {}
    elif type(attributes) is not dict:
        return None
    elif not _few_texts(attributes):
        if not _plain_json(attributes):
            return None
        try:
            _bounded_json(attributes)
        except ValueError:  # ValidationError too
            return None
        if len(jsoncodec.dumps(attributes)) > MAX_TRADE_JSON_BYTES - _BOUNDED_FIELDS_BYTES:
            return None  # TradeTerms._at_most_64_kib measures it
    submission = trusted(TradeSubmission, {
        "counterparty": counterparty, "side": side, "product": product, "quantity": quantity,
        "price": price, "currency": currency, "trade_date": trade_date,
        "settlement_date": settlement_date, "location": location, "attributes": attributes,
        "trade_id": trade_id})
    if len(data) < len(_SUBMISSION_FIELDS):  # else trusted's set of every field is right
        _set_fields_set(submission, set(data))
    return submission


_ABSENT: Any = object()

# Texts plain_submission found valid already, by field: a batch's lines share a few
# counterparties, products, currencies and dates, each then checked (a date parsed) once
# rather than once a line. Each keeps the first _KNOWN_LIMIT it meets: distinct values
# past them cost a lookup more, never memory. Only exact str are ever looked up.
_KNOWN_LIMIT = 1024
_known_participants: set[str] = set()
_known_products: set[str] = set()
_known_currencies: set[str] = set()
_known_dates: dict[str, date] = {}


def _learned(value: str, pattern: re.Pattern[str], known: set[str]) -> bool:
    if pattern.fullmatch(value) is None:
        return False
    if len(known) < _KNOWN_LIMIT:
        known.add(value)
    return True


def _plain_amount(value: Any) -> Decimal | None:
    if type(value) is not str or not _PLAIN_AMOUNT.fullmatch(value):
        return None
    amount = Decimal(value)
    return amount if amount > 0 else None


def _plain_date(value: Any) -> date | None:
    if type(value) is not str:
        return None
    parsed = _known_dates.get(value)
    if parsed is not None:
        return parsed
    if not _PLAIN_DATE.fullmatch(value):
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        return None
    if len(_known_dates) < _KNOWN_LIMIT:
        _known_dates[value] = parsed
    return parsed


# _few_texts' bounds: at most this many attributes, each name and text at most this
# long. Written as JSON (a character at most 6 bytes, escaped) they stay far below
# what _bounded_json and the size check allow (tests/test_plain_submission.py), and hold
# no number and no nesting.
_FEW_ATTRIBUTES = 16
_SHORT_TEXT = 256


def _few_texts(attributes: dict[str, Any]) -> bool:
    """Whether orjson's attributes are a few short texts by name, with no NUL: what the
    three checks of the general case (_plain_json, _bounded_json, the size) all accept,
    found in one short pass."""
    if len(attributes) > _FEW_ATTRIBUTES:
        return False
    for name, value in attributes.items():
        if (type(value) is not str or len(value) > _SHORT_TEXT or len(name) > _SHORT_TEXT
                or "\x00" in value or "\x00" in name):
            return False
    return True


def _plain_json(value: Any) -> bool:
    """Whether a value parsed by orjson is what jsoncodec.loads gives for the same text:
    no float (jsoncodec's are Decimal) and no integer zero (``-0`` is a JsonNumber)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float or (kind is int and item == 0):
            return False
    return True


class TradeAmendment(TradeTerms):
    """``PUT /v1/trades/{trade_id}``: the full new terms. ``trade_id`` may be repeated
    but must then equal the one in the path."""

    trade_id: TradeId | None = None


class AcceptedDifference(BaseModel):
    """A compared field on which the two legs of an agreed match differ, accepted by
    both participants (a proposal): ``ours`` is this leg's value."""

    model_config = ConfigDict(frozen=True)

    field: str
    ours: str | None
    theirs: str | None


class RulesRef(BaseModel):
    """What decided a match or a mismatch: a matching profile (``name`` the profile), a
    product's rules (``name`` the product), exact matching (no rules: ``version`` null),
    or a replay's own rules."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["profile", "product", "exact", "replay"]
    name: str
    version: int | None


class MatchRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    match_id: UUID
    counterparty_trade_id: str
    counterparty_version: int
    # Only on the version a proposal's acceptance wrote (reason "agreed"); absent else.
    accepted_differences: list[AcceptedDifference] | None = Field(
        default=None, exclude_if=lambda value: value is None)
    # What decided it; absent on matches an operator forced or the two sides agreed.
    rules: RulesRef | None = Field(default=None, exclude_if=lambda value: value is None)


class MismatchField(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    ours: str | None
    theirs: str | None
    tolerance: str | None


class Mismatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    counterparty_trade_id: str
    fields: list[MismatchField]
    # The rules the trades were compared under (absent on lists written before).
    rules: RulesRef | None = Field(default=None, exclude_if=lambda value: value is None)


class Trade(TradeTerms):
    """One stored version of a trade, as the API returns it."""

    trade_id: str
    participant: str
    version: int
    status: Status
    match: MatchRef | None = None
    mismatches: list[Mismatch] = Field(default_factory=list)
    reason: Reason
    comment: str | None = None
    recorded_at: Annotated[AwareDatetime, UtcText]
    # Kept by the store for matching and audit; not part of the API body.
    actor: str | None = Field(default=None, exclude=True)
    first_submitted_at: datetime | None = Field(default=None, exclude=True)
    rules_version: int | None = Field(default=None, exclude=True)
    replay_id: UUID | None = Field(default=None, exclude=True)

    def terms(self) -> TradeTerms:
        # A trade's fields are valid terms already: not validated again (hot in matching).
        return trusted(TradeTerms, {name: getattr(self, name) for name in TERM_FIELDS})

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def counterparty_trade_ids(self) -> list[str]:
        """The counterparty's trades this version points at: the one it matched, else
        those it was compared with and missed (nearest first)."""
        if self.match is not None:
            return [self.match.counterparty_trade_id]
        return list(dict.fromkeys(m.counterparty_trade_id for m in self.mismatches))


def plain_dump(trade: Trade) -> dict[str, Any]:
    """``trade.model_dump(mode="python")`` as ``jsoncodec.dumps`` writes it — the same
    bytes — built straight from the trade's values at half the cost of pydantic's
    serializer (and its Python hooks per amount and instant), as a batch answers with
    ten thousand trades: amounts as their text; the instant left to orjson, whose text
    is utc_text's for a UTC instant with microseconds in years 1000 and on; a match's
    id left to orjson or jsoncodec's hook, both its text. A subclass of Trade, the rare
    nested lists (mismatches, accepted differences) and any other instant go through
    pydantic. tests/test_plain_dump.py holds the two to each other."""
    if type(trade) is not Trade:
        return trade.model_dump(mode="python")
    values = trade.__dict__
    match, mismatches, recorded_at = values["match"], values["mismatches"], values["recorded_at"]
    return {
        "counterparty": values["counterparty"], "side": values["side"],
        "product": values["product"], "quantity": format(values["quantity"], "f"),
        "price": format(values["price"], "f"), "currency": values["currency"],
        "trade_date": values["trade_date"], "settlement_date": values["settlement_date"],
        "location": values["location"], "attributes": values["attributes"],
        "trade_id": values["trade_id"], "participant": values["participant"],
        "version": values["version"], "status": values["status"],
        "match": None if match is None else _plain_match(match),
        "mismatches": [m.model_dump(mode="python") for m in mismatches] if mismatches else [],
        "reason": values["reason"], "comment": values["comment"],
        "recorded_at": recorded_at if recorded_at.tzinfo is UTC and recorded_at.microsecond
        and recorded_at.year >= 1000 else utc_text(recorded_at),
    }


def _plain_match(match: MatchRef) -> dict[str, Any]:
    if match.accepted_differences is not None:
        return match.model_dump(mode="python")
    plain: dict[str, Any] = {
        "match_id": match.match_id, "counterparty_trade_id": match.counterparty_trade_id,
        "counterparty_version": match.counterparty_version}
    rules = match.rules
    if rules is not None:
        plain["rules"] = {"kind": rules.kind, "name": rules.name, "version": rules.version}
    return plain


class AgedTrade(Trade):
    """A trade as a read returns it: the stored version plus its cut-off and whether it
    is overdue, computed for the instant read (kevin.domain.cutoffs), never stored."""

    cutoff_at: Annotated[AwareDatetime, UtcText] | None = None
    overdue: bool = False


class ParticipantCreate(BaseModel):
    """``POST /v1/participants``; ``label``: whom its first key is for (ApiKeyCreate)."""

    model_config = ConfigDict(extra="forbid")

    name: ParticipantName
    label: KeyLabel | None = None


class ParticipantCreated(BaseModel):
    name: str
    api_key: str


class TradeVersions(BaseModel):
    versions: list[Trade]


class TradePage(BaseModel):
    trades: list[AgedTrade]
    next_cursor: str | None


class ErrorBody(BaseModel):
    error: str
    message: str
    details: Any = None
