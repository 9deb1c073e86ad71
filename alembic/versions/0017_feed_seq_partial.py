"""The feed's seq key as a partial unique index: only the rows that have a seq.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30

0001 made seq a unique constraint, whose index holds every row: a feed row's insert
wrote an entry (NULL) in it before the sequencer gave the row its seq (and another
then). And the sequencer's backlog (seq IS NULL, oldest first) could be read from it:
with statistics that see no unsequenced row (taken with the feed drained, the usual
case) the planner chose it over ix_feed_unsequenced, which gives the backlog in the
order the round takes it, and every round then read and sorted the whole backlog
(docs/performance.md, change 47). NULLs never conflict, so the same seqs are unique with
the index limited to the rows that have one; every read by seq (`seq > $1`, max(seq))
implies seq IS NOT NULL, and nothing names it in ON CONFLICT.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("uq_feed_seq", "feed", type_="unique")
    op.create_index("uq_feed_seq", "feed", ["seq"], unique=True,
                    postgresql_where=sa.text("seq IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("uq_feed_seq", table_name="feed")
    op.create_unique_constraint("uq_feed_seq", "feed", ["seq"])
