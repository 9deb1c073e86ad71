"""The command line, through its real entry point."""

from __future__ import annotations

import asyncpg
import pytest

from kevin.dburl import to_asyncpg_dsn
from kevin.domain.keys import hash_key
from tests.processes import run_cli


def _one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kevin: ")
    return lines[0]


def test_migrate_brings_the_schema_to_head(empty_db_url):
    result = run_cli("migrate", KEVIN_DATABASE_URL=empty_db_url)
    assert result.returncode == 0, result.stderr
    assert "schema at 0001" in result.stdout or "schema at" in result.stdout


async def test_participant_add_prints_a_working_key(db_url):
    result = run_cli("participant", "add", "BANKQ", KEVIN_DATABASE_URL=db_url)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("kv_")
    conn = await asyncpg.connect(to_asyncpg_dsn(db_url))
    try:
        owner = await conn.fetchval(
            "SELECT participant FROM api_keys WHERE key_hash = $1", hash_key(key))
    finally:
        await conn.close()
    assert owner == "BANKQ"
    again = run_cli("participant", "add", "BANKQ", KEVIN_DATABASE_URL=db_url)
    assert "already exists" in _one_line_error(again)


def test_bad_arguments_and_settings_fail_with_one_line(db_url):
    assert "invalid participant name" in _one_line_error(
        run_cli("participant", "add", "lower case", KEVIN_DATABASE_URL=db_url))
    assert "KEVIN_PORT" in _one_line_error(
        run_cli("migrate", KEVIN_DATABASE_URL=db_url, KEVIN_PORT="eighty"))
    assert "not a PostgreSQL URL" in _one_line_error(
        run_cli("migrate", KEVIN_DATABASE_URL="mysql://nope"))


@pytest.mark.slow  # CLI subprocesses that wait for a connection to fail
def test_unreachable_database_fails_with_one_line():
    line = _one_line_error(
        run_cli("migrate", KEVIN_DATABASE_URL="postgresql://postgres@127.0.0.1:1/kevin"))
    assert "database" in line


@pytest.mark.slow  # CLI subprocesses
def test_consume_names_the_hook_it_cannot_load():
    base = ("consume", "--url", "http://127.0.0.1:1", "--api-key", "kv_x",
            "--database-url", "postgresql://postgres@127.0.0.1:1/none", "--strategy",
            "contiguous")
    for option, spec, why in (
            ("--callback", "tests.consumer_hooks:nothing", "has no attribute"),
            ("--on-proposal", "tests.no_such_module:record", "No module named"),
            ("--on-overdue", "tests.consumer_hooks:NOT_A_FUNCTION", "not a function")):
        line = _one_line_error(run_cli(*base, option, spec))
        assert f"cannot load {option} {spec!r}" in line and why in line, line
