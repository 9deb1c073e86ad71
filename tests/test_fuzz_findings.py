"""What fuzzing found, pinned down: each was a 500 or an input the contract refuses but
the service took."""

from __future__ import annotations

from kevin import jsoncodec
from tests.conftest import trade_body


async def test_non_ascii_digits_in_numbers_are_refused_not_500(client, banks):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    # "²".isdigit() is True, but int("²") raises: these were 500s.
    resp = await client.get("/v1/trades?limit=%C2%B2", headers=a)
    assert resp.status == 422
    resp = await client.put("/v1/trades/A-0001", json=trade_body(),
                            headers={**a, "If-Match": "\u00b2"})
    assert resp.status == 412


async def test_a_nul_character_is_422_wherever_it_comes_from(client, banks):
    a, _ = banks
    resp = await client.get("/v1/trades?product=a%00b", headers=a)
    assert resp.status == 422
    assert (await resp.json())["error"] == "validation_failed"
    for body in (trade_body(location="LD\x00N"), trade_body(attributes={"k": "v\x00"})):
        resp = await client.post("/v1/trades", json=body, headers=a)
        assert resp.status == 422, await resp.text()


async def test_integers_wider_than_64_bits_in_attributes_come_back_as_given(client, banks):
    a, _ = banks
    big = b"978907712328010467387865416889008128"
    raw = jsoncodec.dumps(trade_body()).replace(
        b'"attributes":{"desk":"metals"}', b'"attributes":{"big":' + big + b"}")
    resp = await client.post("/v1/trades", data=raw,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    assert '"big":978907712328010467387865416889008128' in await resp.text()
    again = await client.get("/v1/trades/A-0001", headers=a)
    assert '"big":978907712328010467387865416889008128' in await again.text()


async def test_sloppy_amounts_dates_and_instants_are_refused(client, banks):
    a, _ = banks
    for field, value in [("quantity", "1_000"), ("quantity", " 1"), ("price", "\u0661"),
                         ("price", ""), ("settlement_date", 0), ("trade_date", "2026-11-20T00:00")]:
        resp = await client.post("/v1/trades", json=trade_body(**{field: value}), headers=a)
        assert resp.status == 422, (field, value, await resp.text())
        assert [d["field"] for d in (await resp.json())["details"]] == [field]
    for good in ("1e3", "1000.", ".5", 7):
        resp = await client.post("/v1/trades", json=trade_body(f"Q-{good}", quantity=good),
                                 headers=a)
        assert resp.status == 201, (good, await resp.text())
    resp = await client.get("/v1/trades?as_of=0.5", headers=a)  # not a Unix time
    assert resp.status == 422
    resp = await client.get("/v1/trades?as_of=2026-11-21T10:00:00%2B01:00", headers=a)
    assert resp.status == 200


async def test_an_admin_naming_an_impossible_participant_gets_422(client, banks):
    from tests.conftest import ADMIN

    resp = await client.get("/v1/trades?participant=bad%C2%84", headers=ADMIN)
    assert resp.status == 422
    resp = await client.get("/v1/trades?participant=", headers=ADMIN)
    assert resp.status == 200  # empty is the same as absent: every participant


async def test_rules_take_no_boolean_for_a_number_of_days(client):
    from tests.conftest import ADMIN

    resp = await client.put("/v1/rules/XAU", json={"settlement_date_window_days": False},
                            headers=ADMIN)
    assert resp.status == 422
