"""Security: keys stored only as hashes, the admin token compared in constant time,
participants isolated from each other on every endpoint, admin endpoints closed to
participants, and SQL built only from bound parameters.

ENDPOINTS below must name every route the app serves; a new route fails
test_every_endpoint_is_covered until its isolation is tested here."""

from __future__ import annotations

import ast
import hashlib
import hmac
import re
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from kevin import jsoncodec
from kevin.api.app import create_app
from kevin.domain import keys
from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
          ("GET", "/openapi.json")}
ADMIN_ONLY = {
    ("POST", "/v1/participants"), ("PUT", "/v1/rules/{product}"),
    ("GET", "/v1/rules/{product}"), ("POST", "/v1/admin/matches"),
    ("DELETE", "/v1/admin/matches/{match_id}"), ("POST", "/v1/replays"),
    ("GET", "/v1/replays/{replay_id}"), ("PUT", "/v1/participants/{name}"),
    ("PUT", "/v1/profiles/{name}"), ("GET", "/v1/profiles/{name}"),
    ("DELETE", "/v1/profiles/{name}"), ("GET", "/v1/profiles"),
    # tests/test_api_keys.py: not even a participant's own keys.
    ("GET", "/v1/participants"),
    ("POST", "/v1/participants/{name}/keys"), ("GET", "/v1/participants/{name}/keys"),
    ("DELETE", "/v1/participants/{name}/keys/{key_id}"),
}
# Participant endpoints, each exercised across participants in a test below.
ISOLATED = {
    ("POST", "/v1/trades"), ("GET", "/v1/trades"), ("GET", "/v1/trades/{trade_id}"),
    ("PUT", "/v1/trades/{trade_id}"), ("DELETE", "/v1/trades/{trade_id}"),
    ("GET", "/v1/trades/{trade_id}/versions"), ("GET", "/v1/alleged"),
    ("POST", "/v1/trades/batch"), ("GET", "/v1/feed"), ("POST", "/v1/trades/import"),
    ("GET", "/v1/trades/{trade_id}/confirmation"), ("POST", "/v1/proposals"),
    ("GET", "/v1/proposals"), ("GET", "/v1/proposals/{proposal_id}"),
    ("POST", "/v1/proposals/{proposal_id}/accept"), ("POST", "/v1/proposals/{proposal_id}/reject"),
    ("POST", "/v1/proposals/{proposal_id}/withdraw"),
    # tests/test_reports.py: a participant's report counts only its own trades, and
    # naming another participant is 404.
    ("GET", "/v1/reports/stp"),
    # tests/test_notes.py: a note is its participant's own, 404 to anyone else.
    ("GET", "/v1/trades/{trade_id}/notes"), ("POST", "/v1/trades/{trade_id}/notes"),
}
# The web workbench's pages and forms: a session from /ui/login, and the same isolation
# (tests/test_ui.py: a participant cannot see or act on another's trade; CSRF on every form).
WORKBENCH = {
    ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/login"), ("POST", "/ui/login"),
    ("POST", "/ui/logout"), ("GET", "/ui/static"), ("GET", "/ui/exceptions"),
    ("GET", "/ui/trades/{trade_id}"), ("POST", "/ui/trades/{trade_id}/cancel"),
    ("POST", "/ui/admin/force-match"), ("POST", "/ui/admin/break"), ("POST", "/ui/bulk"),
    ("POST", "/ui/proposals"), ("POST", "/ui/proposals/{proposal_id}/{decision}"),
    ("GET", "/ui/reports/stp"), ("GET", "/ui/admin/profiles"), ("GET", "/ui/admin/rules"),
    ("POST", "/ui/admin/rules"), ("POST", "/ui/admin/profiles"),
    # tests/test_api_keys.py: the admin's alone.
    ("GET", "/ui/admin/participants"), ("POST", "/ui/admin/participants"),
    # tests/test_notes.py: a participant's own trades only; CSRF.
    ("POST", "/ui/trades/{trade_id}/notes"),
    # tests/test_exceptions_csv.py: the session's own book (another's is 404).
    ("GET", "/ui/exceptions.csv"),
    # tests/test_ui.py: finds a trade in the session's own book only (another's is 404).
    ("GET", "/ui/trades"),
}
ENDPOINTS = PUBLIC | ADMIN_ONLY | ISOLATED | WORKBENCH


def test_every_endpoint_is_covered(service):
    served = {(r.method, r.resource.canonical)
              for r in create_app(service, ADMIN_TOKEN).router.routes()
              if r.method != "HEAD"}
    assert served - ENDPOINTS == set(), "new endpoints need isolation tests in this file"
    assert ENDPOINTS - served == set()


# --- keys and the admin token ----------------------------------------------------------


async def test_api_keys_are_stored_only_as_hashes(api, conn):
    headers = await api.participant("BANKA")
    key = headers["Authorization"].removeprefix("Bearer ")
    rows = await conn.fetch("SELECT * FROM api_keys")
    assert [bytes(r["key_hash"]) for r in rows] == [hashlib.sha256(key.encode()).digest()]
    # The key appears nowhere in the database, in any table.
    for table in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
        dump = await conn.fetchval(
            f'SELECT coalesce(string_agg(t::text, \'\n\'), \'\') FROM "{table[0]}" t')
        assert key not in dump, table[0]


async def test_the_admin_token_is_compared_in_constant_time(client, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    resp = await client.post("/v1/participants", json={"name": "BANKA"},
                             headers={"Authorization": "Bearer not-the-admin-token"})
    assert resp.status == 401
    assert (b"not-the-admin-token", ADMIN_TOKEN.encode()) in compared
    resp = await client.post("/v1/participants", json={"name": "BANKA"}, headers=ADMIN)
    assert resp.status == 201


async def test_no_key_a_bad_key_or_another_scheme_is_401_everywhere(client):
    for method, path in sorted(ISOLATED | ADMIN_ONLY):
        url = _concrete(path)
        for headers in ({}, {"Authorization": "Bearer kv_wrong"},
                        {"Authorization": f"Basic {ADMIN_TOKEN}"}):
            resp = await client.request(method, url, headers=headers, json={})
            assert resp.status == 401, (method, path, headers)
            assert (await resp.json())["error"] == "unauthorized"


async def test_admin_endpoints_refuse_participant_keys(client, banks):
    a, _ = banks
    for method, path in sorted(ADMIN_ONLY):
        resp = await client.request(method, _concrete(path), headers=a,
                                    json={"name": "BANKZ", "legs": [], "since":
                                          "2026-01-01T00:00:00Z"})
        assert resp.status == 403, (method, path, await resp.text())
        assert (await resp.json())["error"] == "forbidden"


def _concrete(path: str) -> str:
    return (path.replace("{trade_id}", "A-1").replace("{product}", "XAU")
            .replace("{match_id}", str(uuid.uuid4())).replace("{replay_id}", str(uuid.uuid4()))
            .replace("{proposal_id}", str(uuid.uuid4())).replace("{name}", "BANKZ")
            .replace("{key_id}", "0123456789abcdef"))


# --- participant isolation -------------------------------------------------------------


@pytest.fixture
async def three(api):
    """BANKA and BANKB trade with each other; BANKC is a bystander."""
    return (await api.participant("BANKA"), await api.participant("BANKB"),
            await api.participant("BANKC"))


SECRET = "a-detail-only-bankb-may-see"


async def test_another_participants_trade_reads_as_404(client, three, conn):
    a, b, c = three
    resp = await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    assert resp.status == 201
    for intruder in (b, c):
        for url in ("/v1/trades/A-1", "/v1/trades/A-1?as_of=2099-01-01T00:00:00Z",
                    "/v1/trades/A-1/versions", "/v1/trades/A-1?participant=BANKA",
                    "/v1/trades?participant=BANKA", "/v1/trades/A-1/notes"):
            resp = await client.get(url, headers=intruder)
            assert resp.status == 404, (url, await resp.text())
            assert "BANKA" not in await resp.text() or "participant=BANKA" in url
        listed = await (await client.get("/v1/trades", headers=intruder)).json()
        assert listed["trades"] == []
    # The owner and the admin do see it.
    assert (await client.get("/v1/trades/A-1", headers=a)).status == 200
    assert (await client.get("/v1/trades/A-1?participant=BANKA", headers=ADMIN)).status == 200


async def test_another_participants_trade_cannot_be_changed(client, three, conn):
    a, b, _ = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    before = await conn.fetch("SELECT * FROM trades ORDER BY participant, trade_id, version")
    resp = await client.put("/v1/trades/A-1", headers={**b, "If-Match": '"1"'},
                            json=trade_body("A-1", price="1", counterparty="BANKA"))
    assert resp.status == 404
    resp = await client.delete("/v1/trades/A-1", headers={**b, "If-Match": '"1"'})
    assert resp.status == 404
    # The same trade_id is B's own, separate trade: A's is untouched.
    resp = await client.post("/v1/trades", json=trade_body("A-1", counterparty="BANKC"),
                             headers=b)
    assert resp.status == 201 and (await resp.json())["participant"] == "BANKB"
    after = await conn.fetch("SELECT * FROM trades WHERE participant = 'BANKA' "
                             "ORDER BY participant, trade_id, version")
    assert after == [r for r in before if r["participant"] == "BANKA"]


async def test_the_participant_comes_from_the_key_never_the_body(client, three):
    a, _, _ = three
    resp = await client.post("/v1/trades", json={**trade_body("A-9"), "participant": "BANKC"},
                             headers=a)
    assert resp.status == 422  # an unknown field, not a way to write as someone else
    resp = await client.post("/v1/trades", json=trade_body("A-9"), headers=a)
    assert (await resp.json())["participant"] == "BANKA"


async def test_a_batch_writes_only_the_callers_own_trades(client, three, conn):
    a, b, _ = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    before = await conn.fetch("SELECT * FROM trades WHERE participant = 'BANKA'")
    lines = [
        {**trade_body("A-1", counterparty="BANKC"), "participant": "BANKA"},  # not a field
        trade_body("A-1", counterparty="BANKC"),  # BANKB's own A-1, not BANKA's
    ]
    body = b"\n".join(jsoncodec.dumps(line) for line in lines)
    resp = await client.post("/v1/trades/batch", data=body,
                             headers={**b, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["result"] for r in results] == ["invalid", "created"]
    assert results[1]["trade"]["participant"] == "BANKB"
    assert await conn.fetch("SELECT * FROM trades WHERE participant = 'BANKA'") == before
    # The admin has no trades of its own to submit.
    resp = await client.post("/v1/trades/batch", data=body,
                             headers={**ADMIN, "Content-Type": "application/x-ndjson"})
    assert resp.status == 403


async def test_an_import_writes_only_the_callers_own_trades(client, three, conn):
    a, b, _ = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    before = await conn.fetch("SELECT * FROM trades WHERE participant = 'BANKA'")
    body = trade_body("A-1", counterparty="BANKC", price="1")
    del body["attributes"]
    csv = (",".join(body) + "\n" + ",".join(str(v) for v in body.values()) + "\n").encode()
    resp = await client.post("/v1/trades/import?format=csv", data=csv,
                             headers={**b, "Content-Type": "text/csv"})
    assert resp.status == 200, await resp.text()
    [result] = (await resp.json())["results"]
    assert result["result"] == "created" and result["trade"]["participant"] == "BANKB"
    assert await conn.fetch("SELECT * FROM trades WHERE participant = 'BANKA'") == before


async def test_another_participants_confirmation_reads_as_404(client, three):
    a, b, c = three
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    for fmt in ("mt300", "fpml"):
        for intruder in (b, c):
            resp = await client.get(f"/v1/trades/A-1/confirmation?format={fmt}",
                                    headers=intruder)
            assert resp.status == 404, (fmt, await resp.text())


# Proposals: tests/test_proposals_api.py
# test_only_the_two_participants_and_the_admin_see_a_proposal reads and answers another
# pair's proposal as a bystander (404 on every proposal route) and lists nothing of theirs.


async def test_alleged_shows_only_trades_naming_me(client, three):
    a, b, c = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)  # names BANKB
    alleged_b = (await (await client.get("/v1/alleged", headers=b)).json())["trades"]
    assert [(t["participant"], t["trade_id"]) for t in alleged_b] == [("BANKA", "A-1")]
    for bystander in (a, c):
        resp = await client.get("/v1/alleged", headers=bystander)
        assert (await resp.json())["trades"] == []
    resp = await client.get("/v1/alleged?participant=BANKB", headers=c)
    assert resp.status == 404


async def test_the_feed_carries_only_my_own_updates(client, three):
    from tests.conftest import wait_for
    from tests.feed_helpers import read_all

    a, b, c = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    await client.post("/v1/trades", headers=b, json=trade_body(
        "B-1", counterparty="BANKA", side="buy", attributes={"note": SECRET}))

    async def everything():
        updates = await read_all(client, ADMIN)
        return updates if {u["participant"] for u in updates} == {"BANKA", "BANKB"} else None

    await wait_for(everything)
    mine = await read_all(client, a)
    assert mine and {u["participant"] for u in mine} == {"BANKA"}
    assert SECRET not in jsoncodec.dumps(mine).decode()
    assert await read_all(client, c) == []
    resp = await client.get("/v1/feed?participant=BANKB", headers=a)
    assert resp.status == 403


async def test_a_match_shows_the_counterpartys_reference_and_nothing_else(client, three):
    a, b, _ = three
    await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    resp = await client.post("/v1/trades", headers=b, json=trade_body(
        "B-SECRET-REF", counterparty="BANKA", side="buy",
        attributes={"note": SECRET}, location="LDN"))
    assert (await resp.json())["status"] == "matched"
    mine = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert mine["status"] == "matched"
    # What decided the match (docs/api.md, Matching profiles) is Kevin's, not theirs.
    assert set(mine["match"]) == {"match_id", "counterparty_trade_id", "counterparty_version",
                                  "rules"}
    assert set(mine["match"]["rules"]) == {"kind", "name", "version"}
    assert mine["match"]["counterparty_trade_id"] == "B-SECRET-REF"
    everything_a_sees = "".join([
        await (await client.get(url, headers=a)).text()
        for url in ("/v1/trades/A-1", "/v1/trades/A-1/versions", "/v1/trades", "/v1/alleged")])
    assert SECRET not in everything_a_sees


# --- SQL is built from bound parameters only ------------------------------------------

SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE|COPY|WHERE)\b")
# Identifiers cannot be bound; these splice one Kevin generates itself, never input.
IDENTIFIER_SPLICES = {
    ("kevin/bench/runner.py", "f'CREATE DATABASE \"{name}\"'"),
    ("kevin/bench/runner.py", "f'DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)'"),
    # Named statements (kevin.store.named) are rendered at import, from the modules'
    # constant column lists and parameter names; values are bound by name afterwards.
    ("kevin/store/named.py", "f'(SELECT {fields}, ord {source})'"),
    ("kevin/store/named.py",
     "f'SELECT {select} FROM {lines_source(self.params)} AS {alias} {lateral}'"),
    # The candidate search, built at import from constants (columns, key condition,
    # tolerance window, NEAREST_PER_SIDE); {{price}} and {{quantity}} become parameters.
    ("kevin/store/matching_queries.py",
     "f'\\n(SELECT {columns} FROM trades\\n WHERE {_RESTING_OF_KEY} AND price >= {{price}} "
     "{within} AND {_NOT_BROKEN}\\n ORDER BY price ASC, abs(quantity - {{quantity}}), "
     "first_submitted_at, trade_id COLLATE \"C\"\\n LIMIT {limit})\\nUNION ALL\\n"
     "(SELECT {columns} FROM trades\\n WHERE {_RESTING_OF_KEY} AND price < {{price}} "
     "{within} AND {_NOT_BROKEN}\\n ORDER BY price DESC, abs(quantity - {{quantity}}), "
     "first_submitted_at, trade_id COLLATE \"C\"\\n LIMIT {limit})\\n'"),
    # One column per name in TOLERANCE_FIELDS, the report statements built at import.
    ("kevin/store/reports.py",
     "f'count(*) FILTER (WHERE live AND differed_on_{f}) AS differed_on_{f}'"),
}


def _sql_built_from_values(path: Path) -> list[str]:
    """SQL text assembled at run time from anything but UPPER_CASE constants: f-strings,
    % and .format() inside functions. Module-level SQL is assembled once, at import,
    from constants only, so it cannot carry a request's value."""
    tree = ast.parse(path.read_text())
    at_import = {id(n) for stmt in tree.body
                 if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                 for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in at_import:
            continue
        text, spliced = None, []
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            spliced = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) \
                and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            text, spliced = node.left.value, [node.right]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "format" and isinstance(node.func.value, ast.Constant) \
                and isinstance(node.func.value.value, str):
            text, spliced = node.func.value.value, [*node.args, *node.keywords]
        if text is None or not SQL.search(text):
            continue
        if all(isinstance(s, ast.Name) and s.id.isupper() for s in spliced):
            continue
        found.append(ast.unparse(node))
    return found


def test_sql_is_never_built_by_formatting_values():
    offenders = []
    for path in sorted((ROOT / "kevin").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        offenders += [(relative, text) for text in _sql_built_from_values(path)
                      if (relative, text) not in IDENTIFIER_SPLICES]
    assert offenders == []


def test_the_scan_would_catch_a_formatted_value(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("async def f(conn, name):\n"
                   "    await conn.fetch(f\"SELECT * FROM trades WHERE trade_id = '{name}'\")\n"
                   "    await conn.fetch(\"DELETE FROM t WHERE a = '%s'\" % name)\n"
                   "    await conn.fetch(\"UPDATE t SET a = {}\".format(name))\n")
    assert len(_sql_built_from_values(bad)) == 3


def test_ruff_checks_for_sql_injection():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "S608" in config["tool"]["ruff"]["lint"]["select"]
