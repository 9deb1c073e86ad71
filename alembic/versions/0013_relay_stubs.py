"""The relay's count of updates it published as stubs (too large for the transport).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("relay_checkpoints",
                  sa.Column("stubbed", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("relay_checkpoints", "stubbed")
