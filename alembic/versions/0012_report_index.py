"""The STP report finds a range of trade dates by index, in hot and archived versions alike.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trades_trade_date", "trades", ["trade_date", "participant"])
    op.create_index("ix_trades_archive_trade_date", "trades_archive",
                    ["trade_date", "participant"])


def downgrade() -> None:
    op.drop_index("ix_trades_archive_trade_date", table_name="trades_archive")
    op.drop_index("ix_trades_trade_date", table_name="trades")
