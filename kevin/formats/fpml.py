"""FpML 5.x, confirmation view: a ``requestConfirmation`` of an ``fxSingleLeg`` read into a
trade, and a trade written as one.

Parsed with defusedxml: a document type declaration (and so any entity, internal or
external: XXE, billion laughs) is refused before anything is expanded.

How the message becomes a trade, seen from the importer's party (the ``party`` whose
``partyId`` is its BIC): ``tradeHeader/partyTradeIdentifier`` of that party gives the
trade_id, ``tradeHeader/tradeDate`` the trade date; in ``fxSingleLeg``, the
``exchangeRate/quotedCurrencyPair`` names the base (``currency1`` when the quote basis is
``Currency2PerCurrency1``), ``exchangeRate/rate`` is the price, the amount exchanged in the
base currency the quantity, and the importer buys when it receives the base currency;
``valueDate`` is the settlement date; the other party is the counterparty, by BIC.
``isCorrection`` true amends the trade; false submits it. One document is one record.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from kevin.domain.participants import parse_bic
from kevin.formats import fx
from kevin.formats.records import Record, UnreadableFile, malformed

NAMESPACE = "http://www.fpml.org/FpML-5/confirmation"
FPML_VERSION = "5-12"
BIC_SCHEME = "http://www.fpml.org/coding-scheme/external/iso9362"
TRADE_ID_SCHEME = "urn:kevin:trade-id"
MESSAGE_ID_SCHEME = "urn:kevin:message-id"

_XSD_DECIMAL = re.compile(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_XSD_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Written without a prefix: FpML documents conventionally use the default namespace.
ElementTree.register_namespace("", NAMESPACE)
_BASES = {"Currency2PerCurrency1": 0, "Currency1PerCurrency2": 1}


class _Malformed(Exception):
    def __init__(self, element: str, message: str) -> None:
        self.element, self.message = element, message
        super().__init__(f"{element}: {message}")


def parse(data: bytes, own_bic: str) -> list[Record]:
    """The one record of an FpML document. A document that is not well-formed XML, or
    declares a document type, cannot be read at all: UnreadableFile."""
    try:
        root = SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise UnreadableFile(
            "XML document type declarations and entities are refused",
            [{"field": "body", "message": type(error).__name__}]) from None
    except ElementTree.ParseError as error:
        line, column = error.position
        raise UnreadableFile(f"the body is not well-formed XML: {error}",
                             [{"field": "body", "line": line, "column": column,
                               "message": str(error)}]) from None
    except LookupError as error:  # an XML declaration naming an encoding Python lacks
        raise UnreadableFile(f"the body's XML declaration names an unknown encoding: {error}",
                             [{"field": "body", "message": str(error)}]) from None
    try:
        return [_record(_Reader(root), own_bic)]
    except _Malformed as error:
        return [malformed(1, error.element, error.message)]


class _Reader:
    """Paths of FpML local names under the document's namespace."""

    def __init__(self, root: ElementTree.Element) -> None:
        namespace, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") \
            else ("", "", root.tag)
        if local != "requestConfirmation":
            raise _Malformed(local, "the root element must be requestConfirmation")
        if namespace != NAMESPACE:
            raise _Malformed("requestConfirmation",
                             f"the namespace must be FpML 5's confirmation view, {NAMESPACE}")
        self.root, self.namespace = root, namespace

    def qualified(self, path: str) -> str:
        return "/".join(f"{{{self.namespace}}}{step}" for step in path.split("/"))

    def all(self, path: str, under: ElementTree.Element | None = None
            ) -> list[ElementTree.Element]:
        return (self.root if under is None else under).findall(self.qualified(path))

    def element(self, path: str, under: ElementTree.Element | None = None
                ) -> ElementTree.Element:
        found = (self.root if under is None else under).find(self.qualified(path))
        if found is None:
            raise _Malformed(path, "missing")
        return found

    def text(self, path: str, under: ElementTree.Element | None = None) -> str:
        text = (self.element(path, under).text or "").strip()
        if not text:
            raise _Malformed(path, "empty")
        return text


def _decimal(path: str, text: str) -> str:
    if not _XSD_DECIMAL.fullmatch(text):
        raise _Malformed(path, f"{text!r} is not a positive decimal")
    return text.lstrip("+")


def _date(path: str, text: str) -> str:
    if not _XSD_DATE.fullmatch(text):
        raise _Malformed(path, f"{text!r} is not a date YYYY-MM-DD")
    return text


def _parties(reader: _Reader) -> dict[str, str]:
    """party id → its BIC (a partyId in the ISO 9362 scheme, or one that is a BIC)."""
    parties: dict[str, str] = {}
    for party in reader.all("party"):
        for party_id in reader.all("partyId", party):
            scheme = party_id.get("partyIdScheme", "")
            bic = parse_bic((party_id.text or "").strip())
            if bic is not None and (not scheme or scheme.endswith("iso9362")):
                parties[party.get("id", "")] = bic
                break
    return parties


def _record(reader: _Reader, own_bic: str) -> Record:
    correction = reader.root.find(reader.qualified("isCorrection"))
    amends = correction is not None and (correction.text or "").strip() in ("true", "1")
    parties = _parties(reader)
    ours = [party_id for party_id, bic in parties.items() if bic == own_bic]
    if not ours:
        raise _Malformed("party/partyId", f"no party has your BIC {own_bic}")
    us = ours[0]
    leg_path = "trade/fxSingleLeg"
    leg = reader.element(leg_path)
    trade_id = None
    for identifier in reader.all("trade/tradeHeader/partyTradeIdentifier"):
        reference = identifier.find(reader.qualified("partyReference"))
        if reference is not None and reference.get("href") == us:
            trade_id = reader.text("tradeId", identifier)
    if trade_id is None:
        raise _Malformed("tradeHeader/partyTradeIdentifier",
                         "none with a tradeId for your party")
    exchanged = []
    for number in ("1", "2"):
        path = f"exchangedCurrency{number}"
        currency_leg = reader.element(path, leg)
        payer = reader.element("payerPartyReference", currency_leg).get("href")
        receiver = reader.element("receiverPartyReference", currency_leg).get("href")
        if us not in (payer, receiver) or payer == receiver:
            raise _Malformed(f"{leg_path}/{path}", "your party must pay or receive it, "
                                                   "the other party the other")
        currency = reader.text("paymentAmount/currency", currency_leg)
        amount = _decimal(f"{leg_path}/{path}/paymentAmount/amount",
                          reader.text("paymentAmount/amount", currency_leg))
        exchanged.append((currency, amount, receiver == us, payer if receiver == us
                          else receiver))
    counterparty_id = exchanged[0][3]
    counterparty_bic = parties.get(counterparty_id or "")
    if counterparty_bic is None:
        raise _Malformed("party/partyId", f"the party {counterparty_id!r} has no BIC")
    pair_path = f"{leg_path}/exchangeRate/quotedCurrencyPair"
    quoted = (reader.text("exchangeRate/quotedCurrencyPair/currency1", leg),
              reader.text("exchangeRate/quotedCurrencyPair/currency2", leg))
    basis = reader.text("exchangeRate/quotedCurrencyPair/quoteBasis", leg)
    if basis not in _BASES:
        raise _Malformed(f"{pair_path}/quoteBasis", f"{basis!r} is not one of "
                                                    f"{', '.join(_BASES)}")
    if set(quoted) != {exchanged[0][0], exchanged[1][0]} or quoted[0] == quoted[1]:
        raise _Malformed(pair_path, "the pair must be the two currencies exchanged")
    base, quote = quoted[_BASES[basis]], quoted[1 - _BASES[basis]]
    base_leg = next(item for item in exchanged if item[0] == base)
    base_path = f"{leg_path}/exchangedCurrency{exchanged.index(base_leg) + 1}"
    value_date = leg.find(reader.qualified("valueDate"))
    body: dict[str, Any] = {
        "trade_id": trade_id, "side": "buy" if base_leg[2] else "sell",
        "product": base + quote, "quantity": base_leg[1],
        "price": _decimal(f"{leg_path}/exchangeRate/rate", reader.text("exchangeRate/rate",
                                                                       leg)),
        "currency": quote,
        "trade_date": _date("trade/tradeHeader/tradeDate",
                            reader.text("trade/tradeHeader/tradeDate")),
        "settlement_date": _date(f"{leg_path}/valueDate",
                                 (value_date.text or "").strip() if value_date is not None
                                 else _same_value_dates(reader, leg)),
    }
    sources = {"trade_id": "tradeHeader/partyTradeIdentifier/tradeId",
               "side": f"{base_path}/receiverPartyReference",
               "product": pair_path, "quantity": f"{base_path}/paymentAmount/amount",
               "price": f"{leg_path}/exchangeRate/rate", "currency": pair_path,
               "trade_date": "trade/tradeHeader/tradeDate",
               "settlement_date": f"{leg_path}/valueDate", "counterparty": "party/partyId"}
    return Record(line=1, operation="amend" if amends else "submit", body=body,
                  sources=sources, counterparty_bic=counterparty_bic)


def _same_value_dates(reader: _Reader, leg: ElementTree.Element) -> str:
    """Without valueDate, the legs' own value dates, which must then agree."""
    dates = {(reader.text(f"currency{n}ValueDate", leg)) for n in ("1", "2")}
    if len(dates) != 1:
        raise _Malformed("fxSingleLeg/valueDate", "the legs settle on different dates; "
                                                  "Kevin keeps one settlement date")
    return dates.pop()


# --- writing -----------------------------------------------------------------------------


def render(trade: Any, own_bic: str, their_bic: str) -> bytes:
    """The trade's latest version as a requestConfirmation from its participant to its
    counterparty. Raises NotRepresentable for a trade it cannot state."""
    pair = fx.pair_of(trade.product, trade.currency)
    if trade.status == "cancelled":
        raise fx.NotRepresentable(
            "a cancelled trade has no FpML requestConfirmation (its MT300 is a CANC)",
            [{"field": "status", "message": "cancelled"}])
    counter = fx.counter_amount(trade.quantity, trade.price, pair.quote)
    ns = f"{{{NAMESPACE}}}"

    def sub(parent: ElementTree.Element, name: str, text: str | None = None,
            **attributes: str) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, ns + name, attributes)
        element.text = text
        return element

    root = ElementTree.Element(ns + "requestConfirmation", {"fpmlVersion": FPML_VERSION})
    header = sub(root, "header")
    sub(header, "messageId", f"{trade.trade_id}-v{trade.version}",
        messageIdScheme=MESSAGE_ID_SCHEME)
    sub(header, "sentBy", own_bic)
    sub(header, "sendTo", their_bic)
    sub(header, "creationTimestamp", trade.recorded_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    sub(root, "isCorrection", "false")
    sub(root, "correlationId", trade.trade_id, correlationIdScheme=TRADE_ID_SCHEME)
    sub(root, "sequenceNumber", str(trade.version))
    fx_trade = sub(root, "trade")
    trade_header = sub(fx_trade, "tradeHeader")
    identifier = sub(trade_header, "partyTradeIdentifier")
    sub(identifier, "partyReference", href="party1")
    sub(identifier, "tradeId", trade.trade_id, tradeIdScheme=TRADE_ID_SCHEME)
    sub(trade_header, "tradeDate", trade.trade_date.isoformat())
    leg = sub(fx_trade, "fxSingleLeg")
    # We receive the base currency when we buy it, and pay the quote currency for it.
    we_buy = trade.side == "buy"
    for name, currency, amount, we_receive in (
            ("exchangedCurrency1", pair.base, trade.quantity, we_buy),
            ("exchangedCurrency2", pair.quote, counter, not we_buy)):
        currency_leg = sub(leg, name)
        sub(currency_leg, "payerPartyReference", href="party2" if we_receive else "party1")
        sub(currency_leg, "receiverPartyReference", href="party1" if we_receive else "party2")
        payment = sub(currency_leg, "paymentAmount")
        sub(payment, "currency", currency)
        sub(payment, "amount", format(amount, "f"))
    sub(leg, "valueDate", trade.settlement_date.isoformat())
    rate = sub(leg, "exchangeRate")
    quoted = sub(rate, "quotedCurrencyPair")
    sub(quoted, "currency1", pair.base)
    sub(quoted, "currency2", pair.quote)
    sub(quoted, "quoteBasis", "Currency2PerCurrency1")
    sub(rate, "rate", format(trade.price, "f"))
    for party_id, bic in (("party1", own_bic), ("party2", their_bic)):
        party = sub(root, "party", id=party_id)
        sub(party, "partyId", bic, partyIdScheme=BIC_SCHEME)
    ElementTree.indent(root)
    document: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
