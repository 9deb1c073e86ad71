"""Notes on a trade: what the people working a participant's exceptions record about one
of its trades (the counterparty was called, an amendment is on its way). A note is the
participant's own — the counterparty never sees it — and, like every version of a
trade, never changed once written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

NOTE_LIMIT = 2000  # characters: trade_notes' check constraint (alembic 0020)
LABEL_LIMIT = 64  # characters: api_keys' check constraint (alembic 0020)
NOTES_PAGE_LIMIT = 1000  # notes a page of GET /v1/trades/{trade_id}/notes at most


def _printable(value: str) -> str:
    """Text a person reads: not blank, and no control character but a line break or a
    tab (PostgreSQL's text cannot hold NUL at all)."""
    if not value.strip():
        raise ValueError("must not be blank")
    if any(ord(c) < 32 and c not in "\n\t\r" or ord(c) == 127 for c in value):
        raise ValueError("must not hold control characters")
    return value


NoteText = Annotated[str, StringConstraints(min_length=1, max_length=NOTE_LIMIT),
                     AfterValidator(_printable)]
# Whom the admin issued a key to, named as the author of what the key writes.
KeyLabel = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_LIMIT,
                                            strip_whitespace=True),
                     AfterValidator(_printable)]

ADMIN_AUTHOR = "admin"


class NoteCreate(BaseModel):
    """``POST /v1/trades/{trade_id}/notes``."""

    model_config = ConfigDict(extra="forbid")

    text: NoteText


class Note(BaseModel):
    """A note as written: ``version`` is the trade's latest version then; ``author`` the
    label of the key that wrote it (else ``key <key_id>``), or ``admin``; ``key_id`` that
    key's id (null: the admin token)."""

    note_id: int
    participant: str
    trade_id: str
    version: int
    text: str
    author: str
    key_id: str | None
    written_at: datetime


class Notes(BaseModel):
    """A page of a trade's notes, oldest first; ``next_cursor`` asks for the next (null:
    this is the last)."""

    notes: list[Note]
    next_cursor: str | None


@dataclass(frozen=True)
class NotesPage:
    notes: list[Note]
    next_after: int | None  # the note_id the next page starts after; None: no next page


@dataclass(frozen=True)
class NotesSummary:
    """A trade's notes at a glance (an exceptions row): how many, the last one's author
    and instant."""

    count: int
    last_author: str
    last_written_at: datetime


def author_of(label: str | None, key_id: str | None) -> str:
    """Who a note says wrote it: the key's label, else its id; no key: the admin."""
    if key_id is None:
        return ADMIN_AUTHOR
    return label if label is not None else f"key {key_id}"
