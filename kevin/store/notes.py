"""Trade notes in PostgreSQL (kevin.domain.notes; the statements in notes_queries)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from kevin.domain.keys import key_id as key_id_of
from kevin.domain.notes import Note, NotesPage, NotesSummary, author_of
from kevin.store import notes_queries as q


def _note(row: asyncpg.Record) -> Note:
    return Note(note_id=row["note_id"], participant=row["participant"],
                trade_id=row["trade_id"], version=row["version"], text=row["body"],
                author=row["author"], key_id=row["key_id"], written_at=row["written_at"])


async def add(conn: asyncpg.Connection, participant: str, trade_id: str, text: str,
              key_hash: bytes | None) -> Note | None:
    """A note on the participant's trade, written with the key of hash ``key_hash``
    (None: the admin token); None when the participant has no such trade."""
    key_id = None if key_hash is None else key_id_of(key_hash)
    label = None if key_hash is None else await conn.fetchval(q.SELECT_KEY_LABEL, key_hash)
    row = await conn.fetchrow(q.INSERT_NOTE, participant, trade_id, text,
                              author_of(label, key_id), key_id)
    return None if row is None else _note(row)


async def summaries(conn: asyncpg.Connection,
                    trades: Sequence[tuple[str, str]]) -> dict[tuple[str, str], NotesSummary]:
    """Each of ``trades`` (participant, trade_id) that has notes: their summary."""
    if not trades:
        return {}
    rows = await conn.fetch(q.SELECT_SUMMARIES, [p for p, _ in trades], [t for _, t in trades])
    return {(r["participant"], r["trade_id"]): NotesSummary(
        r["notes"], r["last_author"], r["last_written_at"]) for r in rows}


async def page(conn: asyncpg.Connection, participant: str, trade_id: str, after: int,
               limit: int) -> NotesPage:
    """The notes on the participant's trade after note ``after``, oldest first, at most
    ``limit`` of them."""
    rows = await conn.fetch(q.SELECT_NOTES_PAGE, participant, trade_id, after, limit + 1)
    notes = [_note(row) for row in rows[:limit]]
    return NotesPage(notes, notes[-1].note_id if len(rows) > limit else None)


async def newest(conn: asyncpg.Connection, participant: str, trade_id: str,
                 limit: int) -> list[Note]:
    """The ``limit`` newest notes on the participant's trade, oldest first."""
    return [_note(row) for row in await conn.fetch(q.SELECT_LATEST_NOTES, participant,
                                                   trade_id, limit)]
