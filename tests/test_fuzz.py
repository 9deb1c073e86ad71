"""Schemathesis against the served /openapi.json of a real `kevin serve`: no 5xx, every
response conforms to the document (status, content type, headers, body schema), and
schema-violating requests are refused.

Run once with a participant's key and once with the admin token, so both sides of every
endpoint are reached. The number of examples is bounded (FUZZ_EXAMPLES per operation and
phase, override with KEVIN_FUZZ_EXAMPLES); the count of cases that ran is printed. Which
checks run, and why two are left out, is in tests/schemathesis.toml; tests/fuzz_hooks.py
teaches schemathesis to send NDJSON.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import Server, request

# Two schemathesis runs, each bounded by its own subprocess timeout (240 s): the suite's
# default per-test timeout (120 s) is less than the work this test is given to do.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * 240 + 60)]

HERE = Path(__file__).resolve().parent
ADMIN_TOKEN = "fuzz-admin"
FUZZ_EXAMPLES = int(os.environ.get("KEVIN_FUZZ_EXAMPLES", "20"))


def _schemathesis(url: str, token: str, seed: int, cwd: Path) -> tuple[int, str]:
    # One worker: schemathesis' workers are threads, and CPython 3.11's ast.parse
    # (hypothesis calls it to describe filters) is not thread-safe ("AST constructor
    # recursion depth mismatch").
    done = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli",
         "--config-file", str(HERE / "schemathesis.toml"), "run", f"{url}/openapi.json",
         "-H", f"Authorization: Bearer {token}",
         "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(seed), "--workers", "1",
         "--generation-database", "none", "--no-color", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=240, cwd=cwd,  # it leaves .schemathesis/
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false",
             "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent),
                                                         os.environ.get("PYTHONPATH")]))})
    found = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert done.returncode == 0 and found, done.stdout[-6000:] + done.stderr[-2000:]
    assert found.group(1) == found.group(2)
    return int(found.group(1)), done.stdout


async def test_the_api_conforms_to_its_openapi_document_under_fuzzing(db_url, tmp_path):
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    try:
        await server.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        keys = {}
        for name in ("BANKA", "BANKB"):
            status, body = await request("POST", f"{server.url}/v1/participants",
                                         json={"name": name}, headers=admin)
            assert status == 201
            keys[name] = body["api_key"]
            # BICs, so that MT300 and FpML imports reach their readers, not the 409.
            status, _ = await request("PUT", f"{server.url}/v1/participants/{name}",
                                      json={"bic": f"BANKGB{name[-1]}L"}, headers=admin)
            assert status == 200
        # Something to find: a trade of BANKA's, one trade the fuzzer can read back.
        status, _ = await request(
            "POST", f"{server.url}/v1/trades", headers={"Authorization": f"Bearer {keys['BANKA']}"},
            json={"trade_id": "0", "counterparty": "BANKB", "side": "buy", "product": "0",
                  "quantity": "1", "price": "1", "currency": "AAA",
                  "trade_date": "2000-01-01", "settlement_date": "2000-01-01"})
        assert status == 201

        as_participant, _ = await _as_thread(server.url, keys["BANKA"], 1, tmp_path)
        as_admin, _ = await _as_thread(server.url, ADMIN_TOKEN, 2, tmp_path)
        print(f"\nschemathesis: {as_participant} cases as a participant, {as_admin} as the "
              f"admin, {FUZZ_EXAMPLES} examples per operation and phase; all passed")
        assert "unhandled error" not in server.log()
        assert await server.stop() == 0
    finally:
        await server.stop(9)


async def _as_thread(url: str, token: str, seed: int, cwd: Path) -> tuple[int, str]:
    return await asyncio.to_thread(_schemathesis, url, token, seed, cwd)
