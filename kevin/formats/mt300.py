"""SWIFT MT300 (Foreign Exchange Confirmation): read one or more messages into trades, and
write a trade as one.

Written against SWIFT's published MT300 format and field specifications: a message is
blocks ``{1:basic header}{2:application header}[{3:user header}]{4:text block -}
[{5:trailer}]``; the text block holds fields ``:TAG:value`` in sequences opened by
``:15A:`` (A, general information), ``:15B:`` (B, transaction details: B1 amount bought
from ``:32B:``, B2 amount sold from ``:33B:``), then the optional C, D, E.

How a message becomes a trade, seen from Party A (``:82a:``, the importing participant):
``:20:`` is the trade_id of a new trade (``:22A:NEWT``, and ``DUPL``/``EXOP``, which
restate one); ``AMND`` and ``CANC`` change the trade whose reference is in ``:21:``.
``:87a:`` is the counterparty, by BIC. ``:30T:`` trade date, ``:30V:`` value date (the
settlement date), ``:36:`` the rate (the price). Of ``:32B:`` (bought by Party A) and
``:33B:`` (sold), the base currency is the one whose amount times the rate is the other's
(kevin.formats.fx.base_of): its amount is the quantity, ``side`` is ``buy`` when Party A
buys it, and the product is the pair (``EURUSD``). Amounts and the rate use the decimal
comma. Location and attributes have no place in an MT300: imported trades have none.

Every error names the tag (or block) at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

from kevin.domain.participants import parse_bic
from kevin.formats import fx
from kevin.formats.records import Operation, Record, malformed

OPERATIONS: dict[str, Operation] = {
    "NEWT": "submit", "DUPL": "submit", "EXOP": "submit", "AMND": "amend", "CANC": "cancel",
}

# Between messages a file may hold line breaks and the separators of common file formats
# (`$` in RJE files, SOH/ETX around each message in DOS-PCC files).
_SEPARATORS = re.compile(r"[\s$\x01\x03]*")
_MESSAGE_START = re.compile(r"\{1:")
_BASIC_HEADER = re.compile(r"\{1:F01([A-Z0-9]{12})[0-9]{4}[0-9]{6}\}")
_INPUT_HEADER = re.compile(r"\{2:I([0-9]{3})([A-Z0-9]{12})(?:[UNS][0-9]?(?:[0-9]{3})?)?\}")
_OUTPUT_HEADER = re.compile(
    r"\{2:O([0-9]{3})[0-9]{4}[0-9]{6}([A-Z0-9]{12})[0-9]{10}[0-9]{6}[0-9]{4}[UNS]?\}")
_FIELD_START = re.compile(r"^:([0-9]{2}[A-Z]?):", re.MULTILINE)
# SWIFT's x character set, of which :20: and :21: are made.
_X_TEXT = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]+")
_DATE = re.compile(r"[0-9]{8}")
# d: digits with exactly one decimal comma and at least one digit before it.
_DECIMAL = re.compile(r"([0-9]+),([0-9]*)")
_CURRENCY_AMOUNT = re.compile(r"([A-Z]{3})(.*)", re.DOTALL)
_COMMON_REFERENCE = re.compile(r"([A-Z]{4}[A-Z0-9]{2})([0-9]{4})([A-Z]{4}[A-Z0-9]{2})")
_PARTY_J_BIC = re.compile(r"/ABIC/([A-Z0-9]+)")


class _Malformed(Exception):
    def __init__(self, source: str, message: str) -> None:
        self.source, self.message = source, message
        super().__init__(f"{source}: {message}")


# --- reading -----------------------------------------------------------------------------


def parse(text: str, own_bic: str) -> list[Record]:
    """Every MT300 message of ``text``, in order, each a record (or a malformed one).
    ``own_bic`` (11-character form) is the importer's: Party A must be it."""
    records: list[Record] = []
    for line, chunk in _messages(text):
        if not chunk.startswith("{1:"):
            records.append(malformed(line, "{1:", "text outside a message; each message "
                                                  "starts with {1:"))
            continue
        message = chunk.rstrip("\r\n\t $\x01\x03")
        try:
            text_block, end = _blocks(message)
            records.append(_trade(line, _text_block(text_block), own_bic))
        except _Malformed as error:
            records.append(malformed(line, error.source, error.message))
            continue
        if end != len(message):  # text after the message's last block: refused alone
            junk = _SEPARATORS.match(message, end).end()  # type: ignore[union-attr]
            records.append(malformed(line + message.count("\n", 0, junk), "{1:",
                                     "text outside a message; each message starts with {1:"))
    return records


def _messages(text: str) -> Iterator[tuple[int, str]]:
    """(the line it starts on, its text) for each message; text between messages that is
    no separator is a record of its own, refused."""
    position, line = 0, 1
    starts = [m.start() for m in _MESSAGE_START.finditer(text)] + [len(text)]
    if starts[0] != 0:
        gap = _SEPARATORS.match(text, 0, starts[0])
        if gap is None or gap.end() != starts[0]:
            yield 1, text[:starts[0]]  # not a message: refused as one
    for start, end in zip(starts, starts[1:], strict=False):
        line += text.count("\n", position, start)
        position = start
        yield line, text[start:end]


def _blocks(message: str) -> tuple[str, int]:
    """The text block of a message whose header blocks are well formed, and where the
    message's blocks end."""
    basic = _BASIC_HEADER.match(message)
    if basic is None:
        raise _Malformed("{1:", "the basic header block is not {1:F01<12-character "
                                "address><4-digit session><6-digit sequence>}")
    position = basic.end()
    application = (_INPUT_HEADER.match(message, position)
                   or _OUTPUT_HEADER.match(message, position))
    if application is None:
        raise _Malformed("{2:", "the application header block is malformed or missing")
    if application.group(1) != "300":
        raise _Malformed("{2:", f"message type {application.group(1)}, not 300")
    position = application.end()
    if message.startswith("{3:", position):
        position = _nested_block_end(message, position, "{3:")
    if not message.startswith("{4:", position):
        raise _Malformed("{4:", "the text block is missing")
    end = message.find("\n-}", position)
    if end < 0:
        raise _Malformed("{4:", "the text block is truncated: it does not end with -}")
    text = message[position + 3:end + 1]
    position = end + 3
    if message.startswith("{5:", position):
        position = _nested_block_end(message, position, "{5:")
    return text, position


def _nested_block_end(message: str, position: int, name: str) -> int:
    """Where a block of {tag:value} sub-blocks (user header, trailer) ends."""
    depth = 0
    for index in range(position, len(message)):
        if message[index] == "{":
            depth += 1
        elif message[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    raise _Malformed(name, "the block is truncated: its braces do not close")


Fields = dict[str, dict[str, str]]  # sequence → tag → value
_SEQUENCES = {"15A": "A", "15B": "B", "15C": "C", "15D": "D", "15E": "E"}


def _text_block(text: str) -> Fields:
    """The fields of the text block, by sequence. The same tag may appear in more than
    one sequence (53a, 56a, 57a in B1 and B2), never twice in one."""
    text = text.replace("\r\n", "\n")
    if not text.startswith("\n"):
        raise _Malformed("{4:", "the text block must start on a new line")
    starts = list(_FIELD_START.finditer(text))
    if not starts or starts[0].start() != 1:
        raise _Malformed("{4:", "the text block holds no :TAG: fields")
    sequences: Fields = {}
    sequence = ""
    for found, after in zip(starts, starts[1:] + [None], strict=True):
        tag = found.group(1)
        value = text[found.end():after.start() if after else len(text)].removesuffix("\n")
        if tag[:2] == "15":
            sequence = _SEQUENCES.get(tag, "?")
            if sequence == "?" or value.strip():
                raise _Malformed(f":{tag}:", "not a sequence this message has, or not empty")
            if sequence in sequences:
                raise _Malformed(f":{tag}:", "the sequence appears twice")
            sequences[sequence] = {}
            continue
        if sequence == "":
            raise _Malformed(f":{tag}:", "a field before the first sequence (:15A:)")
        if sequence in ("B", "B1") and tag == "32B":
            sequence = "B1"
        elif sequence in ("B1", "B2") and tag == "33B":
            sequence = "B2"
        fields = sequences.setdefault(sequence, {})
        if tag in fields:
            raise _Malformed(f":{tag}:", f"repeated in sequence {sequence}")
        fields[tag] = value
    return sequences


def _required(fields: Fields, sequence: str, *tags: str) -> str:
    """The value of the first of ``tags`` present in the sequence (options: 82A, 82J)."""
    for tag in tags:
        if tag in fields.get(sequence, {}):
            return fields[sequence][tag]
    shown = "/".join(f":{t}:" for t in tags)
    where = {"A": "sequence A", "B": "sequence B", "B1": "subsequence B1 (amount bought)",
             "B2": "subsequence B2 (amount sold)"}[sequence]
    raise _Malformed(shown, f"mandatory field missing in {where}")


def _reference(tag: str, value: str) -> str:
    if not 1 <= len(value) <= 16 or not _X_TEXT.fullmatch(value):
        raise _Malformed(tag, "a reference is 1 to 16 characters of the SWIFT x set")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise _Malformed(tag, "a reference must not start or end with / nor contain //")
    return value


def _date(tag: str, value: str) -> date:
    if not _DATE.fullmatch(value):
        raise _Malformed(tag, f"{value!r} is not a date YYYYMMDD")
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise _Malformed(tag, f"{value!r} is no calendar date") from None


def _decimal(tag: str, value: str, width: int) -> Decimal:
    """SWIFT's d format: digits, exactly one decimal comma, at most ``width`` characters."""
    found = _DECIMAL.fullmatch(value)
    if found is None or len(value) > width:
        if value.count(",") + value.count(".") > 1:
            raise _Malformed(tag, f"{value!r} has more than one decimal mark")
        if "." in value:
            raise _Malformed(tag, f"{value!r}: the decimal mark is a comma")
        raise _Malformed(tag, f"{value!r} is not a number of at most {width} characters "
                              "with a decimal comma")
    whole, fraction = found.groups()
    return Decimal(f"{whole}.{fraction}" if fraction else whole)


def _currency_amount(tag: str, value: str) -> tuple[str, Decimal]:
    found = _CURRENCY_AMOUNT.fullmatch(value)
    if found is None:
        raise _Malformed(tag, f"{value!r} is not a currency code and an amount")
    currency, amount_text = found.groups()
    if not fx.is_currency(currency):
        raise _Malformed(tag, f"{currency} is not an ISO 4217 currency with a minor unit")
    amount = _decimal(tag, amount_text, 15)
    if not fx.fits_currency(amount, currency):
        raise _Malformed(tag, f"{amount_text} has more decimals than {currency} has")
    if amount == 0:
        raise _Malformed(tag, "the amount must not be zero")
    return currency, amount


def _party_bic(tag: str, value: str) -> str:
    """The BIC of a party field: option A (``[/account]`` line, then the BIC) or option J
    with the ``/ABIC/`` code. Option D (name and address) names no BIC."""
    if tag.endswith("A:"):
        lines = value.split("\n")
        candidate = lines[-1] if len(lines) <= 2 else ""
    elif tag.endswith("J:"):
        found = _PARTY_J_BIC.search(value)
        candidate = found.group(1) if found else ""
    else:
        raise _Malformed(tag, "option D names no BIC; Kevin identifies parties by BIC "
                              "(option A or J with /ABIC/)")
    bic = parse_bic(candidate)
    if bic is None:
        raise _Malformed(tag, f"{candidate or value!r} is not a BIC")
    return bic


def _party(fields: Fields, number: str) -> tuple[str, str]:
    for option in "AJD":
        tag = f"{number}{option}"
        if tag in fields["A"]:
            return f":{tag}:", _party_bic(f":{tag}:", fields["A"][tag])
    raise _Malformed(f":{number}a:", "mandatory field missing in sequence A")


def rate_digits(rate: Decimal) -> str:
    """The four digits of :22C: taken from the rate: its rightmost non-zero digit and the
    three to its left, zero filled (the decimal comma is ignored)."""
    digits = "".join(ch for ch in _swift_decimal(rate) if ch.isdigit()).rstrip("0")
    return digits[-4:].rjust(4, "0")


def _check_common_reference(value: str, rate: Decimal) -> None:
    found = _COMMON_REFERENCE.fullmatch(value)
    if found is None:
        raise _Malformed(":22C:", f"{value!r} is not 4!a2!c4!n4!a2!c (bank and location "
                                  "codes around four digits of the rate)")
    first, digits, second = found.groups()
    if digits != rate_digits(rate):
        raise _Malformed(":22C:", f"the digits {digits} are not those of the rate in :36: "
                                  f"({rate_digits(rate)})")
    if _swift_order(first) > _swift_order(second):
        raise _Malformed(":22C:", "the two codes must be in alphabetical order")


def _swift_order(code: str) -> tuple[tuple[int, str], ...]:
    """SWIFT's alphabetical order: letters before digits."""
    return tuple((ch.isdigit(), ch) for ch in code)


def _trade(line: int, fields: Fields, own_bic: str) -> Record:
    kind = _required(fields, "A", "22A")
    operation = OPERATIONS.get(kind)
    if operation is None:
        raise _Malformed(":22A:", f"{kind!r} is not one of {', '.join(OPERATIONS)}")
    sender_reference = _reference(":20:", _required(fields, "A", "20"))
    if operation == "submit":
        trade_id, trade_id_tag = sender_reference, ":20:"
    else:
        related = fields["A"].get("21")
        if related is None:
            raise _Malformed(":21:", f"mandatory with :22A:{kind}: the reference of the "
                                     "confirmation it changes")
        trade_id, trade_id_tag = _reference(":21:", related), ":21:"
    common_reference = _required(fields, "A", "22C")
    party_a_tag, party_a = _party(fields, "82")
    party_b_tag, party_b = _party(fields, "87")
    if party_a != own_bic:
        raise _Malformed(party_a_tag, f"Party A {party_a} is not you ({own_bic}): import "
                                      "the confirmations you send")
    trade_date = _date(":30T:", _required(fields, "B", "30T"))
    value_date = _date(":30V:", _required(fields, "B", "30V"))
    rate = _decimal(":36:", _required(fields, "B", "36"), 12)
    if rate == 0:
        raise _Malformed(":36:", "the rate must not be zero")
    _check_common_reference(common_reference, rate)
    bought, bought_amount = _currency_amount(":32B:", _required(fields, "B1", "32B"))
    _required(fields, "B1", "57A", "57D", "57J")
    sold, sold_amount = _currency_amount(":33B:", _required(fields, "B2", "33B"))
    _required(fields, "B2", "57A", "57D", "57J")
    if bought == sold:
        raise _Malformed(":33B:", f"both amounts are in {sold}")
    base = fx.base_of(bought, bought_amount, sold, sold_amount, rate)
    if base is None:
        raise _Malformed(":36:", f"the rate {_swift_decimal(rate)} does not relate the "
                                 "amounts of :32B: and :33B:")
    buys = base == bought
    amount_tag = ":32B:" if buys else ":33B:"
    body: dict[str, Any] = {
        "trade_id": trade_id, "side": "buy" if buys else "sell",
        "product": base + (sold if buys else bought),
        "quantity": format(bought_amount if buys else sold_amount, "f"),
        "price": format(rate, "f"),
        "currency": sold if buys else bought,
        "trade_date": trade_date.isoformat(), "settlement_date": value_date.isoformat(),
    }
    sources = {"trade_id": trade_id_tag, "side": amount_tag, "product": ":32B:/:33B:",
               "quantity": amount_tag, "price": ":36:", "currency": ":32B:/:33B:",
               "trade_date": ":30T:", "settlement_date": ":30V:", "counterparty": party_b_tag}
    return Record(line=line, operation=operation, body=body, sources=sources,
                  counterparty_bic=party_b)


# --- writing -----------------------------------------------------------------------------


def _swift_decimal(value: Decimal) -> str:
    """SWIFT's d format of a decimal: its digits as given, with a decimal comma (always
    present: ``100`` is ``100,``)."""
    text = format(value, "f")
    whole, _, fraction = text.partition(".")
    return f"{whole},{fraction}"


def _amount(tag: str, field: str, currency: str, amount: Decimal) -> str:
    if not fx.fits_currency(amount, currency):
        raise fx.NotRepresentable(
            f"{field} {amount} has more decimals than {currency} has",
            [{"field": field, "message": f"{tag} allows {fx.minor_units(currency)} decimals"}])
    text = _swift_decimal(amount)
    if len(text) > 15:
        raise fx.NotRepresentable(f"{field} {amount} is longer than {tag} allows",
                                  [{"field": field, "message": "at most 15 characters"}])
    return f"{currency}{text}"


def _lt_address(bic: str) -> str:
    """The 12-character logical terminal address of a BIC (terminal code A)."""
    return f"{bic[:8]}A{bic[8:]}"


def common_reference(first_bic: str, second_bic: str, rate: Decimal) -> str:
    """:22C: the bank and location codes of both parties in SWIFT's alphabetical order,
    around four digits of the rate."""
    codes = sorted((bic[:4] + bic[6:8] for bic in (first_bic, second_bic)), key=_swift_order)
    return f"{codes[0]}{rate_digits(rate)}{codes[1]}"


def render(trade: Any, own_bic: str, their_bic: str) -> str:
    """The trade's latest version as an MT300 from its participant (Party A, the sender)
    to its counterparty (Party B): ``NEWT`` with its terms, or ``CANC`` once cancelled.
    Raises NotRepresentable for a trade an MT300 cannot state."""
    pair = fx.pair_of(trade.product, trade.currency)
    if not 1 <= len(trade.trade_id) <= 16:
        raise fx.NotRepresentable(
            "an MT300 reference (:20:) is at most 16 characters",
            [{"field": "trade_id", "message": "at most 16 characters for :20:"}])
    rate = _swift_decimal(trade.price)
    if len(rate) > 12:
        raise fx.NotRepresentable(f"price {trade.price} is longer than :36: allows",
                                  [{"field": "price", "message": "at most 12 characters"}])
    counter = fx.counter_amount(trade.quantity, trade.price, pair.quote)
    if counter == 0:
        raise fx.NotRepresentable("the counter amount rounds to zero",
                                  [{"field": "quantity", "message": "too small for :33B:"}])
    base = _amount(":32B:" if trade.side == "buy" else ":33B:", "quantity", pair.base,
                   trade.quantity)
    quote = _amount(":33B:" if trade.side == "buy" else ":32B:", "quantity x price",
                    pair.quote, counter)
    bought, sold = (base, quote) if trade.side == "buy" else (quote, base)
    cancelled = trade.status == "cancelled"
    sequence_a = [":15A:", f":20:{trade.trade_id}"]
    if cancelled:
        sequence_a.append(f":21:{trade.trade_id}")
    sequence_a += [f":22A:{'CANC' if cancelled else 'NEWT'}",
                   f":22C:{common_reference(own_bic, their_bic, trade.price)}",
                   f":82A:{own_bic}", f":87A:{their_bic}"]
    # Receiving agents: each party receives the currency it buys at its own institution.
    sequence_b = [":15B:", f":30T:{trade.trade_date:%Y%m%d}",
                  f":30V:{trade.settlement_date:%Y%m%d}", f":36:{rate}",
                  f":32B:{bought}", f":57A:{own_bic}",
                  f":33B:{sold}", f":57A:{their_bic}"]
    text = "\r\n".join(["", *sequence_a, *sequence_b, "-"])
    return (f"{{1:F01{_lt_address(own_bic)}0000000000}}"
            f"{{2:I300{_lt_address(their_bic)}N}}{{4:{text}}}")

