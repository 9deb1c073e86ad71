"""As-of reads of archived versions in one index probe, however long the history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

The as-of query asks for a trade's last version recorded by an instant. On the primary
key that is a backward walk from the newest version, filtering on recorded_at: cheap for
the handful of versions a trade keeps hot, linear for a long archived history. This index
answers it directly; it lives on the cold table only, so the hot write path pays nothing.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trades_archive_as_of", "trades_archive",
                    ["participant", "trade_id", "recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_trades_archive_as_of", table_name="trades_archive")
