"""The feed's proposal and notice keys as partial unique indexes: only the rows they name.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30

0011 and 0014 made (participant, proposal_id, proposal_version) and (participant,
notice_id) unique constraints, so every feed row had an entry in both, and a trade
version's row (nearly every row) one of (participant, NULL, NULL) and one of
(participant, NULL): two of the five index entries its insert wrote, and two of the six
its sequencing wrote again (the sequencer's UPDATE of seq is never HOT: seq is indexed).
NULLs never conflict, so the same keys are unique with the indexes limited to the rows
that have them; nothing names them in ON CONFLICT.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# (name, columns, the column that says a row has this key)
_KEYS = (
    ("uq_feed_participant_proposal_id_proposal_version",
     ["participant", "proposal_id", "proposal_version"], "proposal_id"),
    ("uq_feed_participant_notice_id", ["participant", "notice_id"], "notice_id"),
)


def upgrade() -> None:
    for name, columns, subject in _KEYS:
        op.drop_constraint(name, "feed", type_="unique")
        op.create_index(name, "feed", columns, unique=True,
                        postgresql_where=sa.text(f"{subject} IS NOT NULL"))


def downgrade() -> None:
    for name, columns, _ in _KEYS:
        op.drop_index(name, table_name="feed")
        op.create_unique_constraint(name, "feed", columns)
