"""kevin.formats, pure: the readers against sample messages written from the published
specifications (tests/data/formats), their refusals, and round trips with hypothesis."""

from __future__ import annotations

import codecs
import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kevin.domain.models import TradeSubmission
from kevin.formats import csvfile, fpml, fx, mt300, read
from kevin.formats.records import UnreadableFile

DATA = Path(__file__).parent / "data" / "formats"
OURS, THEIRS = "BANKGB2LXXX", "BANKUS33XXX"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def only_error(records: list[Any]) -> dict[str, Any]:
    assert len(records) == 1
    error = records[0].error
    assert error is not None, records
    return {"message": error.message, "fields": [d["field"] for d in error.details]}


# --- MT300 -------------------------------------------------------------------------------


def test_mt300_new_trade_from_party_a():
    [record] = read("mt300", sample("mt300_newt.fin"), OURS)
    assert record.error is None and record.operation == "submit" and record.line == 1
    assert record.body == {
        "trade_id": "FX-20261120-001", "side": "buy", "product": "EURUSD",
        "quantity": "1000000.00", "price": "1.0845", "currency": "USD",
        "trade_date": "2026-11-20", "settlement_date": "2026-11-24"}
    assert record.counterparty_bic == THEIRS
    assert record.sources["price"] == ":36:" and record.sources["counterparty"] == ":87A:"


def test_mt300_new_amend_cancel_in_one_file_refer_by_21():
    records = read("mt300", sample("mt300_sequence.fin"), OURS)
    assert [(r.line, r.operation, r.body["trade_id"]) for r in records] == [
        (1, "submit", "FX-002"), (17, "amend", "FX-002"), (34, "cancel", "FX-002")]
    # Party A buys JPY against USD at 150.152: the base is USD, which it sells.
    assert {k: records[0].body[k] for k in ("side", "product", "quantity", "price",
                                            "currency")} == {
        "side": "sell", "product": "USDJPY", "quantity": "1000000", "price": "150.152",
        "currency": "JPY"}
    assert records[1].body["price"] == "150.153"
    assert records[1].sources["trade_id"] == ":21:"


@pytest.mark.parametrize(("name", "field", "words"), [
    ("mt300_missing_30v.fin", ":30V:", "mandatory field missing"),
    ("mt300_bad_date.fin", ":30T:", "no calendar date"),
    ("mt300_two_decimal_marks.fin", ":32B:", "more than one decimal mark"),
    ("mt300_truncated.fin", "{4:", "truncated"),
])
def test_mt300_malformed_samples_name_the_tag(name, field, words):
    error = only_error(read("mt300", sample(name), OURS))
    assert error["fields"] == [field] and words in error["message"], error


def test_mt300_unknown_bic_is_left_for_the_directory():
    """The reader takes any BIC; the importer refuses one no participant registered
    (tests/test_formats_api.py)."""
    [record] = read("mt300", sample("mt300_unknown_bic.fin"), OURS)
    assert record.error is None and record.counterparty_bic == "UNKNUS33XXX"


def test_mt300_party_a_must_be_the_importer():
    error = only_error(read("mt300", sample("mt300_newt.fin"), "OTHRGB2LXXX"))
    assert error["fields"] == [":82A:"] and "not you" in error["message"]


def text_of(name: str) -> str:
    return sample(name).decode()


@pytest.mark.parametrize(("edit", "field", "words"), [
    (lambda m: m.replace(":22A:NEWT", ":22A:AMND"), ":21:", "mandatory with :22A:AMND"),
    (lambda m: m.replace(":22A:NEWT", ":22A:SWAP"), ":22A:", "not one of"),
    (lambda m: m.replace(":22C:BANK2L0845BANK33", ":22C:BANK2L0846BANK33"), ":22C:",
     "not those of the rate"),
    (lambda m: m.replace(":22C:BANK2L0845BANK33", ":22C:BANK330845BANK2L"), ":22C:",
     "alphabetical"),
    (lambda m: m.replace(":36:1,0845", ":36:1.0845"), ":36:", "decimal mark is a comma"),
    (lambda m: m.replace(":36:1,0845", ":36:2,0845").replace("0845BANK", "0845BANK"),
     ":36:", "does not relate the amounts"),
    (lambda m: m.replace("USD1084500,00", "USD1084500,001"), ":33B:", "more decimals"),
    (lambda m: m.replace("EUR1000000,00", "XYZ1000000,00"), ":32B:", "not an ISO 4217"),
    (lambda m: m.replace("I300", "I320"), "{2:", "not 300"),
    (lambda m: m.replace(":20:FX-20261120-001", ":20:FX-20261120-0001-LONG"), ":20:",
     "1 to 16 characters"),
    (lambda m: m.replace(":82A:BANKGB2L", ":82D:BANK GB\nLONDON"), ":82D:", "names no BIC"),
    (lambda m: m.replace(":87A:BANKUS33", ":87A:NOT A BIC"), ":87A:", "not a BIC"),
    (lambda m: m.replace(":30T:20261120\n", ":30T:20261120\n:30T:20261121\n"), ":30T:",
     "repeated"),
    (lambda m: m.replace("{1:F01BANKGB2LAXXX0123456789}", "{1:F01BANK}"), "{1:", "basic"),
    (lambda m: "junk" + m, "{1:", "outside a message"),
])
def test_mt300_refusals_name_the_tag(edit, field, words):
    error = only_error(read("mt300", edit(text_of("mt300_newt.fin")).encode(), OURS)[:1])
    assert error["fields"] == [field] and words in error["message"], error


def test_mt300_one_bad_message_spoils_no_other():
    good, bad = text_of("mt300_newt.fin"), text_of("mt300_bad_date.fin")
    records = read("mt300", (good + bad + good.replace("FX-20261120-001", "FX-3")).encode(),
                   OURS)
    assert [r.error is None for r in records] == [True, False, True]
    assert [r.line for r in records] == [1, 20, 39]


def test_mt300_text_between_messages_spoils_neither():
    good = text_of("mt300_newt.fin")
    records = read("mt300", (good + "not a message\n" + good.replace("FX-20261120-001", "FX-3"))
                   .encode(), OURS)
    assert [(r.line, r.error is None) for r in records] == [(1, True), (20, False), (21, True)]
    assert records[1].error is not None and "outside a message" in records[1].error.message


def test_mt300_output_header_and_crlf_are_read():
    message = text_of("mt300_newt.fin").replace(
        "{2:I300BANKUS33XXXXN}",
        "{2:O3001200261120BANKUS33AXXX12345678902611201200N}").replace("\n", "\r\n")
    [record] = read("mt300", message.encode(), OURS)
    assert record.error is None and record.body["quantity"] == "1000000.00"


def test_mt300_common_reference_rate_digits():
    """SWIFT's rule: the rightmost non-zero digit of the rate and the three to its left."""
    assert [mt300.rate_digits(Decimal(r)) for r in ("1.0845", "148.2", "0.9", "100",
                                                    "1.2000", "0.000012345")] == [
        "0845", "1482", "0009", "0001", "0012", "2345"]


# --- FpML --------------------------------------------------------------------------------


def test_fpml_request_confirmation_of_fx_single_leg():
    [record] = read("fpml", sample("fpml_request_confirmation.xml"), OURS)
    assert record.error is None and record.operation == "submit"
    assert record.body == {
        "trade_id": "FPML-0001", "side": "buy", "product": "GBPUSD", "quantity": "10000000",
        "price": "1.4800", "currency": "USD", "trade_date": "2026-11-20",
        "settlement_date": "2026-11-24"}
    assert record.counterparty_bic == THEIRS


def test_fpml_seen_from_the_other_party():
    """The same document imported by party B: its own trade id, and it sells GBP."""
    [record] = read("fpml", sample("fpml_request_confirmation.xml"), THEIRS)
    assert record.body["trade_id"] == "US-77" and record.body["side"] == "sell"
    assert record.counterparty_bic == OURS


@pytest.mark.parametrize("name", ["fpml_xxe.xml", "fpml_billion_laughs.xml"])
def test_fpml_entities_are_refused_before_expansion(name):
    with pytest.raises(UnreadableFile) as refused:
        read("fpml", sample(name), OURS)
    assert "refused" in refused.value.message


def test_fpml_not_well_formed_names_the_line():
    with pytest.raises(UnreadableFile) as refused:
        read("fpml", sample("fpml_request_confirmation.xml")[:900], OURS)
    assert refused.value.details[0]["line"] > 1


def test_fpml_missing_element_is_named():
    error = only_error(read("fpml", sample("fpml_missing_rate.xml"), OURS))
    assert error["fields"] == ["exchangeRate/rate"] and "missing" in error["message"]


@pytest.mark.parametrize(("edit", "field"), [
    (lambda x: x.replace("Currency2PerCurrency1", "Sideways"),
     "trade/fxSingleLeg/exchangeRate/quotedCurrencyPair/quoteBasis"),
    (lambda x: x.replace("<tradeDate>2026-11-20", "<tradeDate>20/11/2026"),
     "trade/tradeHeader/tradeDate"),
    (lambda x: x.replace("<currency2>USD", "<currency2>JPY"),
     "trade/fxSingleLeg/exchangeRate/quotedCurrencyPair"),
    (lambda x: x.replace("FpML-5/confirmation", "FpML-5/reporting"), "requestConfirmation"),
    (lambda x: x.replace(">BANKGB2L<", ">OTHRGB2L<"), "party/partyId"),
])
def test_fpml_refusals_name_the_element(edit, field):
    document = edit(sample("fpml_request_confirmation.xml").decode()).encode()
    assert only_error(read("fpml", document, OURS))["fields"] == [field]


def test_fpml_correction_is_an_amendment():
    document = sample("fpml_request_confirmation.xml").replace(
        b"<isCorrection>false", b"<isCorrection>true")
    assert read("fpml", document, OURS)[0].operation == "amend"


# --- CSV ---------------------------------------------------------------------------------

HEADER = ("trade_id,counterparty,side,product,quantity,price,currency,trade_date,"
          "settlement_date,location,attributes.desk")


def test_csv_rows_with_rfc4180_quoting_bom_and_crlf():
    text = (HEADER + "\r\n"
            'A-1,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,LDN,"metals, ""spot"""\r\n'
            "\r\n"
            'A-2,BANKB,buy,XAU,5,999,USD,2026-11-20,2026-11-24,,"two\r\nlines"\r\n')
    records = read("csv", codecs.BOM_UTF8 + text.encode(), None)
    assert [r.line for r in records] == [2, 4]
    assert records[0].body["attributes"] == {"desk": 'metals, "spot"'}
    assert records[0].body["location"] == "LDN" and "location" not in records[1].body
    assert records[1].body["attributes"] == {"desk": "two\r\nlines"}
    TradeSubmission.model_validate(records[0].body)


def test_csv_a_bad_row_spoils_no_other():
    text = (HEADER + "\n" + "A-1,BANKB,sell,XAU,100,1,USD,2026-11-20,2026-11-24,,\n"
            + 'A-2,BANKB,"sell"x,XAU,100,1,USD,2026-11-20,2026-11-24,,\n'
            + "A-3,BANKB,sell\n" + "A-4,BANKB,sell,XAU,100,1,USD,2026-11-20,2026-11-24,,\n")
    records = read("csv", text.encode(), None)
    assert [(r.line, r.error is None) for r in records] == [
        (2, True), (3, False), (4, False), (5, True)]
    assert records[2].error is not None and "11 columns" in records[2].error.message


def test_csv_not_utf8_is_unreadable_naming_the_line():
    with pytest.raises(UnreadableFile) as refused:
        read("csv", (HEADER + "\nA-1,BANKB,sell,XAU,1,1,USD,2026-11-20,2026-11-24,Z\xfcrich,\n")
             .encode("latin-1"), None)
    assert refused.value.details[0]["line"] == 2


def test_csv_header_must_name_trade_fields():
    with pytest.raises(UnreadableFile) as refused:
        read("csv", b"trade_id,colour,trade_id\n", None)
    problems = {(d["field"], d["message"]) for d in refused.value.details}
    assert ("colour", "not a trade field nor attributes.NAME") in problems
    assert ("trade_id", "named twice") in problems and ("price", "missing") in problems


# --- round trips -------------------------------------------------------------------------

CURRENCIES = ("EUR", "GBP", "USD", "JPY", "CHF", "AUD", "CAD", "SEK", "KWD", "MXN")


@st.composite
def fx_trades(draw: Any) -> SimpleNamespace:
    base, quote = draw(st.lists(st.sampled_from(CURRENCIES), min_size=2, max_size=2,
                                unique=True))
    price = draw(st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("99999"),
                             places=draw(st.integers(0, 6))))
    units = fx.minor_units(base) or 0
    quantity = draw(st.decimals(min_value=1, max_value=Decimal("999999999"),
                                places=draw(st.integers(0, units))))
    # A counter amount of at least one unit and within the 15 characters of :32B:/:33B:.
    assume(1 <= quantity * price < Decimal(10) ** 11)
    if fx._rank(base) > fx._rank(quote):
        # A pair against market convention reads back as itself only when its amounts
        # rule out the conventional reading (where both fit, convention decides: an MT300
        # names no base currency).
        counter = fx.counter_amount(quantity, price, quote)
        assume(fx.base_of(base, quantity, quote, counter, price) == base)
    trade_date = draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    return SimpleNamespace(
        trade_id=draw(st.from_regex(r"[A-Za-z0-9:][A-Za-z0-9.:-]{0,15}", fullmatch=True)),
        product=base + quote, currency=quote, side=draw(st.sampled_from(["buy", "sell"])),
        quantity=quantity, price=price, trade_date=trade_date,
        settlement_date=draw(st.dates(trade_date, date(2099, 12, 31))),
        status="unmatched", version=draw(st.integers(1, 9)),
        recorded_at=datetime(2026, 11, 29, tzinfo=UTC))


def body_of(trade: SimpleNamespace) -> dict[str, Any]:
    return {"trade_id": trade.trade_id, "side": trade.side, "product": trade.product,
            "quantity": format(trade.quantity, "f"), "price": format(trade.price, "f"),
            "currency": trade.currency, "trade_date": trade.trade_date.isoformat(),
            "settlement_date": trade.settlement_date.isoformat()}


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(fx_trades())
def test_round_trip_trade_mt300_import_same_trade(trade):
    message = mt300.render(trade, OURS, THEIRS)
    [record] = read("mt300", message.encode(), OURS)
    assert record.error is None, (message, record.error)
    assert (record.operation, record.body, record.counterparty_bic) == (
        "submit", body_of(trade), THEIRS)


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(fx_trades())
def test_round_trip_trade_fpml_import_same_trade(trade):
    [record] = read("fpml", fpml.render(trade, OURS, THEIRS), OURS)
    assert record.error is None, record.error
    assert (record.operation, record.body, record.counterparty_bic) == (
        "submit", body_of(trade), THEIRS)


def test_round_trip_cancelled_trade_is_a_canc():
    trade = SimpleNamespace(
        trade_id="A-9", product="EURUSD", currency="USD", side="sell",
        quantity=Decimal("5000000"), price=Decimal("1.1"), trade_date=date(2026, 11, 20),
        settlement_date=date(2026, 11, 24), status="cancelled", version=3,
        recorded_at=datetime(2026, 11, 29, tzinfo=UTC))
    [record] = read("mt300", mt300.render(trade, OURS, THEIRS).encode(), OURS)
    assert record.operation == "cancel" and record.body["trade_id"] == "A-9"


def test_renderers_refuse_what_they_cannot_state():
    trade = SimpleNamespace(
        trade_id="A-1", product="XAU", currency="USD", side="sell", quantity=Decimal(1),
        price=Decimal(1), trade_date=date(2026, 11, 20), settlement_date=date(2026, 11, 24),
        status="unmatched", version=1, recorded_at=datetime(2026, 11, 29, tzinfo=UTC))
    with pytest.raises(fx.NotRepresentable):
        mt300.render(trade, OURS, THEIRS)
    trade.product, trade.quantity = "EURUSD", Decimal("0.001")
    with pytest.raises(fx.NotRepresentable) as refused:
        mt300.render(trade, OURS, THEIRS)
    assert refused.value.details[0]["field"] == "quantity"


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                min_size=1, max_size=20)


@st.composite
def csv_trades(draw: Any) -> dict[str, Any]:
    trade_date = draw(st.dates(date(2000, 1, 1), date(2099, 12, 31)))
    return {
        "trade_id": draw(st.from_regex(r"[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,63}",
                                       fullmatch=True)),
        "counterparty": draw(st.from_regex(r"[A-Z0-9_]{1,32}", fullmatch=True)),
        "side": draw(st.sampled_from(["buy", "sell"])),
        "product": draw(st.from_regex(r"[A-Za-z0-9._/-]{1,32}", fullmatch=True)),
        "quantity": format(draw(st.decimals(min_value=Decimal("0.000001"), max_value=10**12,
                                            places=6)), "f"),
        "price": format(draw(st.decimals(min_value=Decimal("0.01"), max_value=10**9,
                                         places=4)), "f"),
        "currency": draw(st.from_regex(r"[A-Z]{3}", fullmatch=True)),
        "trade_date": trade_date.isoformat(),
        "settlement_date": draw(st.dates(trade_date, date(2099, 12, 31))).isoformat(),
        "location": draw(st.none() | _text),
        "attributes": draw(st.dictionaries(st.sampled_from(["desk", "book", "note é"]), _text)),
    }


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(csv_trades(), min_size=1, max_size=5), st.booleans())
def test_round_trip_csv_written_by_csv_module(trades, bom):
    keys = sorted({key for trade in trades for key in trade["attributes"]})
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow([*csvfile.REQUIRED_COLUMNS, "location",
                     *(csvfile.ATTRIBUTE_PREFIX + key for key in keys)])
    for trade in trades:
        writer.writerow([*(trade[c] for c in csvfile.REQUIRED_COLUMNS), trade["location"] or "",
                         *(trade["attributes"].get(key, "") for key in keys)])
    data = (codecs.BOM_UTF8 if bom else b"") + out.getvalue().encode()
    records = read("csv", data, None)
    expected = [{k: v for k, v in trade.items() if v is not None} for trade in trades]
    assert [r.body for r in records] == expected
    for record in records:  # and each is a valid trade exactly as written
        submission = TradeSubmission.model_validate(record.body)
        assert submission.model_dump(mode="json", exclude_none=True) == {
            **record.body, "attributes": record.body["attributes"]}


# --- any input: a record or a refusal, never an exception ------------------------------------

_MUTATION_ALPHABET = st.sampled_from(list(":{}-,.\r\n/ $0123456789ABCXYZ\x00é"))


@st.composite
def mutated(draw: Any, original: bytes) -> bytes:
    """The original with a few characters deleted, replaced or inserted."""
    text = original.decode()
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.text(_MUTATION_ALPHABET, max_size=3)) + text[at + cut:]
    return text.encode()


@settings(max_examples=300)
@given(mutated(sample("mt300_sequence.fin")))
def test_mt300_any_damage_is_a_record_or_a_refusal(data):
    try:
        records = read("mt300", data, OURS)
    except UnreadableFile:
        return
    # Each record is a trade to validate or names why not (the damage may leave a
    # message that is still well formed).
    assert all(r.error is not None or r.body["trade_id"] for r in records)


@settings(max_examples=200)
@given(mutated(sample("fpml_request_confirmation.xml")))
def test_fpml_any_damage_is_a_record_or_a_refusal(data):
    try:
        [record] = read("fpml", data, OURS)
    except UnreadableFile:
        return
    assert record.error is not None or record.body["trade_id"]


@settings(max_examples=200)
@given(st.lists(st.sampled_from(list('a,"\r\n\x00é') + ["trade_id", "attributes.x"]),
                max_size=40).map(lambda parts: "".join(parts).encode()), st.booleans())
def test_csv_any_text_is_records_or_a_refusal(data, with_header):
    header = b"trade_id,counterparty,side,product,quantity,price,currency,trade_date," \
             b"settlement_date\n" if with_header else b""
    try:
        records = read("csv", header + data, None)
    except UnreadableFile:
        return
    assert all(r.error is not None or "trade_id" in r.body for r in records)


def test_when_both_readings_fit_the_amounts_market_convention_names_the_base():
    # 1 EUR at 1.000001 is 1.000 KWD: read either way, the amounts agree with the rate
    # after rounding to minor units, so EUR (first by convention) is the base, whichever
    # rounding lands closer.
    assert fx.base_of("EUR", Decimal("1"), "KWD", Decimal("1.000"), Decimal("1.000001")) == \
        "EUR"
    assert fx.base_of("KWD", Decimal("1.000"), "EUR", Decimal("1"), Decimal("1.000001")) == \
        "EUR"
    # Away from 1 only one reading fits, convention or not.
    assert fx.base_of("KWD", Decimal("1.000"), "EUR", Decimal("2.00"), Decimal("2")) == "KWD"


def test_fpml_declaring_an_unknown_encoding_is_unreadable_not_an_exception():
    with pytest.raises(UnreadableFile) as refused:
        fpml.parse(b'<?xml version="1.0" encoding="tf-8"?><requestConfirmation/>', OURS)
    assert "encoding" in refused.value.message
