"""Matching: find the trades whose mismatch list names a given trade without a scan.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # When a trade matches elsewhere, is amended or cancelled, every live mismatched trade
    # whose mismatch list names it is re-evaluated; jsonb_path_ops serves `mismatches @>`.
    op.create_index(
        "ix_trades_mismatch_targets", "trades", ["mismatches"],
        postgresql_using="gin", postgresql_ops={"mismatches": "jsonb_path_ops"},
        postgresql_where=sa.text("latest AND status = 'mismatched'"),
    )


def downgrade() -> None:
    op.drop_index("ix_trades_mismatch_targets", table_name="trades")
