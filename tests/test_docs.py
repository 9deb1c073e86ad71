"""The documentation stands alone and stays true: the README's worked session runs as
pasted, its links and the docs' links resolve, and nothing points outside the
repository."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.processes import Server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# Written in two pieces so that this file does not find itself.
OUTSIDE = [".." + "/shared", "/work" + "/shared", "shared" + " notes", "DESIGN" + ".md",
           "API" + ".md", "STYLE" + ".md"]
CHECKED = ["kevin", "tests", "docs", "benchmarks", "alembic", "deploy", ".ci"]


def _text_files() -> list[Path]:
    found = [README, ROOT / "pyproject.toml"]
    for top in CHECKED:
        found += [p for p in (ROOT / top).rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".png"}]
    return found


def test_nothing_points_at_notes_outside_the_repository():
    offending = [f"{path.relative_to(ROOT)}: {needle}" for path in _text_files()
                 for needle in OUTSIDE if needle in path.read_text(errors="replace")]
    assert offending == []


def test_the_readme_is_for_a_user_and_short():
    assert len(README.read_text().splitlines()) < 250


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines()
            if line.startswith("#") and not line.startswith("#!")}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_into_the_docs_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if "://" in target:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == []


def _worked_session() -> str:
    text = README.read_text()
    section = text[text.index("## A worked session"):]
    return section[section.index("```sh\n") + 6:section.index("\n```", section.index("```sh"))]


@pytest.mark.slow
async def test_the_readme_worked_session_runs_as_pasted(db_url, tmp_path):
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN="change-me").start()
    try:
        await server.wait_ready()
        script = _worked_session().replace("localhost:8080", f"127.0.0.1:{server.port}")
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-euo", "pipefail", "-c", script], capture_output=True,
            text=True, timeout=120, check=False)
    finally:
        await server.stop()
    assert done.returncode == 0, done.stderr
    bodies = [json.loads(b) for b in re.findall(r"^\{.*\}$", done.stdout.replace("}{", "}\n{"),
                                                 re.MULTILINE)]
    errors = [b["error"] for b in bodies if "error" in b]
    assert errors == ["version_conflict", "not_found"]  # the stale amend; BANKB's read
    rules = [b for b in bodies if b.get("product") == "XAU" and "price_tolerance" in b]
    assert len(rules) == 1 and rules[0]["version"] == 1  # the as_of read found them
    matched = [b for b in bodies if b.get("status") == "matched" and b.get("trade_id") == "B-7"]
    assert matched and matched[0]["match"]["counterparty_trade_id"] == "A-7"
    assert any(b.get("match_id") for b in bodies)  # the forced match, then its break
    assert any("updates" in b and "last_seq" in b for b in bodies)  # the feed page
    assert any(b.get("name") == "a-b-gold" and b.get("version") == 1 for b in bodies)
    assert any(b.get("state") == "accepted" for b in bodies)  # the agreed proposal
