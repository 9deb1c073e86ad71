"""An index that answers "how old is the oldest unmatched trade?" in one probe.

/metrics reports that age at every scrape; without this index the question scans every
resting trade. Partial on the same predicate as ix_trades_resting, so it holds only
live, unmatched or mismatched rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trades_resting_since", "trades", ["first_submitted_at"],
                    postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"))


def downgrade() -> None:
    op.drop_index("ix_trades_resting_since", table_name="trades")
