"""Feed sequencer index (unsequenced rows in (written_at, id) order) and the relay's
durable position.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sequencer takes unsequenced rows in (written_at, id) order; the index holds only
    # those rows, so it stays as small as the backlog.
    op.drop_index("ix_feed_unsequenced", table_name="feed")
    op.create_index("ix_feed_unsequenced", "feed", ["written_at", "id"],
                    postgresql_where=sa.text("seq IS NULL"))
    op.create_table(
        "relay_checkpoints",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("name", name="pk_relay_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("relay_checkpoints")
    op.drop_index("ix_feed_unsequenced", table_name="feed")
    op.create_index("ix_feed_unsequenced", "feed", ["id"],
                    postgresql_where=sa.text("seq IS NULL"))
