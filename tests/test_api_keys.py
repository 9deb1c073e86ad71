"""A participant's API keys: the admin issues another, lists them, revokes one — a key
rotated without a moment in which the participant's clients have none that works."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from kevin.api import http
from kevin.api.app import create_app
from kevin.api.app_keys import KEVIN, KEY_CACHE
from kevin.config import Settings
from kevin.domain.keys import KEY_REVOKED_CHANNEL, AdminTokens, hash_key, key_id
from kevin.engine.service import TradeService
from tests.conftest import ADMIN, ADMIN_TOKEN, bearer, trade_body, wait_for
from tests.processes import run_cli
from tests.ui_helpers import Browser


def _key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


async def _keys(client: TestClient, name: str = "BANKA") -> list[dict[str, object]]:
    resp = await client.get(f"/v1/participants/{name}/keys", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["keys"]


async def test_a_key_is_rotated_without_a_gap(client, banks, conn):
    a, _ = banks
    first = _key_of(a)
    [listed] = await _keys(client)
    assert listed["key_id"] == key_id(hash_key(first)) and listed["revoked_at"] is None

    resp = await client.post("/v1/participants/BANKA/keys", headers=ADMIN)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["participant"] == "BANKA" and created["api_key"] != first
    assert created["key_id"] == key_id(hash_key(created["api_key"]))
    second = bearer(created["api_key"])
    # Both keys work, for the same participant's trades.
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    assert (await client.get("/v1/trades/A-1", headers=second)).status == 200
    assert [k["key_id"] for k in await _keys(client)] == [listed["key_id"], created["key_id"]]

    resp = await client.delete(f"/v1/participants/BANKA/keys/{listed['key_id']}",
                               headers=ADMIN)
    assert resp.status == 200, await resp.text()
    revoked = await resp.json()
    assert revoked["key_id"] == listed["key_id"] and revoked["revoked_at"] is not None
    assert datetime.fromisoformat(revoked["revoked_at"]) >= datetime.fromisoformat(
        revoked["created_at"])
    # The old key is refused from the next request (it was cached as valid), the new
    # one goes on.
    resp = await client.get("/v1/trades/A-1", headers=a)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == 'Bearer realm="kevin"'
    assert (await client.get("/v1/trades/A-1", headers=second)).status == 200
    # Revoked keys stay listed, with when: the record of when each key was valid.
    assert [(k["key_id"], k["revoked_at"]) for k in await _keys(client)] == [
        (listed["key_id"], revoked["revoked_at"]), (created["key_id"], None)]
    # Revoking again changes nothing, and says the same.
    again = await client.delete(f"/v1/participants/BANKA/keys/{listed['key_id']}",
                                headers=ADMIN)
    assert again.status == 200 and await again.json() == revoked
    # The stored hash is kept, the key never stored.
    rows = await conn.fetch("SELECT * FROM api_keys WHERE participant = 'BANKA'")
    assert len(rows) == 2 and first.encode() not in str([dict(r) for r in rows]).encode()


async def test_only_the_admin_manages_keys_and_unknown_ones_are_404(client, banks):
    a, b = banks
    assert (await client.post("/v1/participants/BANKA/keys")).status == 401
    # Not even its own: a leaked key must not mint its successor.
    assert (await client.post("/v1/participants/BANKA/keys", headers=a)).status == 403
    assert (await client.get("/v1/participants/BANKA/keys", headers=a)).status == 403
    own = key_id(hash_key(_key_of(a)))
    assert (await client.delete(f"/v1/participants/BANKA/keys/{own}",
                                headers=a)).status == 403
    for method, path in [("POST", "/v1/participants/NOBODY/keys"),
                         ("GET", "/v1/participants/NOBODY/keys"),
                         ("GET", "/v1/participants/bad name/keys"),
                         ("DELETE", f"/v1/participants/NOBODY/keys/{own}"),
                         # BANKB's key named under BANKA; a malformed id.
                         ("DELETE", f"/v1/participants/BANKA/keys/"
                                    f"{key_id(hash_key(_key_of(b)))}"),
                         ("DELETE", "/v1/participants/BANKA/keys/not-a-key-id"),
                         ("DELETE", "/v1/participants/BANKA/keys/0000000000000000")]:
        resp = await client.request(method, path, headers=ADMIN)
        assert resp.status == 404, (method, path, resp.status)
        assert (await resp.json())["error"] == "not_found"
    # Nothing of that revoked anything.
    assert (await client.get("/v1/trades", headers=a)).status == 200
    assert (await client.get("/v1/trades", headers=b)).status == 200


async def test_revoking_a_key_ends_the_workbench_sessions_it_opened(client, banks):
    a, _ = banks
    browser = await Browser.login(client, _key_of(a))
    assert (await browser.get("/ui/exceptions")).status == 200
    resp = await client.delete(
        f"/v1/participants/BANKA/keys/{key_id(hash_key(_key_of(a)))}", headers=ADMIN)
    assert resp.status == 200
    assert (await browser.get("/ui/exceptions")).status == 303
    assert (await browser.get("/v1/trades")).status == 401


async def _revoked_in_one_app_refused_by_another(
        client: TestClient, a: dict[str, str], service: TradeService,
        aiohttp_client: Any) -> None:
    """Another app (another process's part) takes BANKA's key as valid; the key is
    revoked through ``client``; the other app refuses it within 5 s, and goes on
    refusing it."""
    other: TestClient = await aiohttp_client(create_app(service, ADMIN_TOKEN))
    assert (await other.get("/v1/trades", headers=a)).status == 200  # cached there
    resp = await client.delete(
        f"/v1/participants/BANKA/keys/{key_id(hash_key(_key_of(a)))}", headers=ADMIN)
    assert resp.status == 200

    async def refused() -> bool:
        return (await other.get("/v1/trades", headers=a)).status == 401

    await wait_for(refused, timeout=5)
    assert (await other.get("/v1/trades", headers=a)).status == 401


async def test_another_process_refuses_a_revoked_key_once_its_cache_lapses(
        client, banks, service: TradeService, aiohttp_client, monkeypatch):
    """Another process (another worker, another host) took the key as valid a moment
    ago and misses the revocation's notification (sent here on a channel nobody
    listens to); it refuses the key once it looks again — here after 0.3 s, by default
    5 s."""
    from kevin.store import participants

    monkeypatch.setattr(http, "KEY_CACHE_SECONDS", 0.3)
    monkeypatch.setattr(participants, "KEY_REVOKED_CHANNEL", "kevin_nobody_listens")
    await _revoked_in_one_app_refused_by_another(client, banks[0], service, aiohttp_client)


async def test_another_process_refuses_a_revoked_key_as_soon_as_it_is_told(
        client, banks, service: TradeService, aiohttp_client, monkeypatch):
    """The revocation reaches every process over LISTEN/NOTIFY: another app, with its own
    listening connection and a key cache that would trust the key for an hour, refuses it
    within a few seconds (the notification, not its cache's lapse)."""
    monkeypatch.setattr(http, "KEY_CACHE_SECONDS", 3600)
    # (Were the other app's watch still starting, it would forget the key when it starts
    # listening: refused either way, and never by the cache's lapse.)
    await _revoked_in_one_app_refused_by_another(client, banks[0], service, aiohttp_client)


async def test_a_listener_that_starts_again_forgets_every_cached_key(
        service: TradeService) -> None:
    """A notification sent while the watch's connection was being made again is lost:
    each time it starts listening, the key cache starts empty."""
    from kevin.feed.runtime import FEED

    app = create_app(service, ADMIN_TOKEN)
    cache = app[KEY_CACHE]
    cache[hash_key("kv_one")] = ("BANKA", 0.0)
    cache[hash_key("kv_two")] = ("BANKB", 0.0)
    on_payload, on_listening = app[FEED].watch._channels[KEY_REVOKED_CHANNEL]
    on_payload(key_id(hash_key("kv_one")))
    assert list(cache) == [hash_key("kv_two")]
    on_listening()
    assert cache == {}


@pytest.mark.slow
async def test_the_cli_issues_lists_and_revokes_keys(db_url, service: TradeService) -> None:
    await service.create_participant("BANKA")
    issued = run_cli("participant", "add-key", "BANKA", KEVIN_DATABASE_URL=db_url)
    assert issued.returncode == 0, issued.stderr
    api_key, id_line = issued.stdout.splitlines()
    assert id_line == f"key id {key_id(hash_key(api_key))}"
    assert await service.participant_for_key(api_key) == "BANKA"

    listed = run_cli("participant", "keys", "BANKA", KEVIN_DATABASE_URL=db_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("valid") for line in lines)
    assert lines[1].startswith(key_id(hash_key(api_key)))

    revoked = run_cli("participant", "revoke-key", "BANKA", key_id(hash_key(api_key)),
                      KEVIN_DATABASE_URL=db_url)
    assert revoked.returncode == 0, revoked.stderr
    assert await service.participant_for_key(api_key) is None
    listed = run_cli("participant", "keys", "BANKA", KEVIN_DATABASE_URL=db_url)
    assert "revoked" in listed.stdout.splitlines()[1]

    for args, message in [(("revoke-key", "BANKA", "nope"), "is no key id"),
                          (("revoke-key", "BANKA", "0" * 16), "has no key"),
                          (("keys", "NOBODY"), "no participant NOBODY")]:
        failed = run_cli("participant", *args, KEVIN_DATABASE_URL=db_url)
        assert failed.returncode != 0 and message in failed.stderr, failed.stderr


async def test_the_admin_lists_every_participant(client, banks):
    resp = await client.put("/v1/participants/BANKB", json={"bic": "BANKGB2L"}, headers=ADMIN)
    assert resp.status == 200
    resp = await client.get("/v1/participants", headers=ADMIN)
    assert resp.status == 200
    listed = (await resp.json())["participants"]
    assert [(p["name"], p["bic"]) for p in listed] == [("BANKA", None),
                                                       ("BANKB", "BANKGB2LXXX")]
    assert all(datetime.fromisoformat(p["created_at"]) for p in listed)
    a, _ = banks
    assert (await client.get("/v1/participants", headers=a)).status == 403


async def test_the_workbench_page_issues_and_revokes_keys(client, banks):
    a, _ = banks
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/admin/participants")
    own = key_id(hash_key(_key_of(a)))
    assert 'id="participant-BANKA"' in page and f'id="key-{own}"' in page
    # A participant is added, and its first key shown this once.
    resp = await admin.post_form("/ui/admin/participants", {"action": "add", "name": "BANKC"})
    assert resp.status == 200, await resp.text()
    shown = await resp.text()
    api_key = re.search(r'<code id="issued-key">([^<]+)</code>', shown).group(1)
    assert await client.app[KEVIN].participant_for_key(api_key) == "BANKC"
    assert api_key not in await admin.page("/ui/admin/participants")  # shown once
    # Another key for BANKA; then BANKA's first one revoked.
    resp = await admin.post_form("/ui/admin/participants", {"action": "add_key",
                                                           "name": "BANKA"})
    second = re.search(r'<code id="issued-key">([^<]+)</code>', await resp.text()).group(1)
    resp = await admin.post_form("/ui/admin/participants", {
        "action": "revoke_key", "name": "BANKA", "key_id": own})
    assert resp.status == 200 and 'id="revoked"' in await resp.text()
    assert (await client.get("/v1/trades", headers=a)).status == 401
    assert (await client.get("/v1/trades", headers=bearer(second))).status == 200
    # Bad input is refused and changes nothing; a participant cannot use the page.
    for form in ({"action": "revoke_key", "name": "BANKA", "key_id": "x"},
                 {"action": "explode", "name": "BANKA"},
                 {"action": "add", "name": "bad name"}):
        assert (await admin.post_form("/ui/admin/participants", form)).status == 422
    resp = await admin.post_form("/ui/admin/participants", {"action": "add", "name": "BANKC"})
    assert resp.status == 409
    banka = await Browser.login(client, second)
    assert (await banka.get("/ui/admin/participants")).status == 403
    assert (await banka.post_form("/ui/admin/participants", {
        "action": "add_key", "name": "BANKA"})).status == 403
    assert len(await _keys(client)) == 2


async def test_issuing_and_revoking_keys_is_logged_for_audit(service: TradeService):
    with capture_logs() as logs:
        api_key = (await service.create_participant("BANKA")).api_key
        created = await service.add_key("BANKA")
        revoked = await service.revoke_key("BANKA", created.key_id)
    events = [(e["event"], e["participant"], e["key_id"]) for e in logs
              if e["event"] in ("participant created", "api key issued", "api key revoked")]
    assert events == [("participant created", "BANKA", key_id(hash_key(api_key))),
                      ("api key issued", "BANKA", created.key_id),
                      ("api key revoked", "BANKA", created.key_id)]
    assert logs[-1]["revoked_at"] == revoked.revoked_at
    # Never the key itself.
    assert not any(api_key in str(e) or created.api_key in str(e) for e in logs)


def test_a_previous_admin_token_is_accepted_only_beside_a_current_one() -> None:
    both = AdminTokens.of("new-token", "old-token")
    assert both.accepts("new-token") and both.accepts("old-token")
    assert not both.accepts("other") and not both.accepts("")
    assert both.accepts_hash(hash_key("old-token")) and not both.accepts_hash(hash_key("x"))
    assert AdminTokens.of("new-token").tokens == ("new-token",)
    assert AdminTokens.of(None, "old-token").tokens == AdminTokens.of(None).tokens == ()
    assert not AdminTokens.of(None, "old-token").accepts("old-token")
    settings = Settings.from_env({"KEVIN_ADMIN_TOKEN": "new-token",
                                  "KEVIN_ADMIN_TOKEN_PREVIOUS": "old-token"})
    assert settings.admin_tokens() == both


async def test_the_admin_token_changes_without_a_gap(service: TradeService, aiohttp_client):
    """Deploy with the new token and the old one as previous, move the admin's clients
    (and sessions) over, then deploy with the new one alone."""
    during = await aiohttp_client(create_app(service, AdminTokens.of("new-token",
                                                                     "old-token")))
    for token in ("new-token", "old-token"):
        resp = await during.get("/v1/participants", headers=bearer(token))
        assert resp.status == 200, token
    old_session = await Browser.login(during, "old-token")
    new_session = await Browser.login(during, "new-token")
    assert (await old_session.get("/ui/exceptions")).status == 200
    after = await aiohttp_client(create_app(service, AdminTokens.of("new-token")))
    assert (await after.get("/v1/participants", headers=bearer("old-token"))).status == 401
    assert (await after.get("/v1/participants", headers=bearer("new-token"))).status == 200
    # Sessions live in the database: the old token's ends, the new one's holds.
    assert (await after.get("/ui/exceptions", headers=old_session.cookie,
                            allow_redirects=False)).status == 303
    assert (await after.get("/ui/exceptions", headers=new_session.cookie,
                            allow_redirects=False)).status == 200


async def test_a_keys_last_use_is_noted_at_most_once_a_minute(client, banks, service, conn):
    a, _ = banks
    created = await (await client.post("/v1/participants/BANKA/keys", headers=ADMIN)).json()
    [old, new] = await _keys(client)
    assert old["last_used_at"] is None and new["last_used_at"] is None  # not used yet
    assert (await client.get("/v1/trades", headers=a)).status == 200
    [old, new] = await _keys(client)
    assert old["last_used_at"] is not None and new["last_used_at"] is None
    # Checked again within the minute (another process, or this one after its cache
    # time): nothing is written.
    assert await service.participant_for_key(_key_of(a)) == "BANKA"
    assert (await _keys(client))[0]["last_used_at"] == old["last_used_at"]
    # A minute on, the next check notes it again.
    await conn.execute("UPDATE api_keys SET last_used_at = last_used_at - interval '61 s'")
    assert await service.participant_for_key(_key_of(a)) == "BANKA"
    later = (await _keys(client))[0]["last_used_at"]
    assert datetime.fromisoformat(later) > datetime.fromisoformat(old["last_used_at"])
    # A revoked key is neither valid nor noted.
    await client.delete(f"/v1/participants/BANKA/keys/{created['key_id']}", headers=ADMIN)
    assert await service.participant_for_key(created["api_key"]) is None
    assert (await _keys(client))[1]["last_used_at"] is None
