"""A participant's BIC (ISO 9362), by which SWIFT MT300 and FpML messages name it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("participants", sa.Column("bic", sa.Text, nullable=True))
    # Stored in its 11-character form (a BIC8 is its head office, branch XXX), so one
    # unique constraint keeps a BIC naming one participant however it was written.
    op.create_check_constraint("ck_participants_bic_format", "participants",
                               "bic ~ '^[A-Z]{6}[A-Z0-9]{2}[A-Z0-9]{3}$'")
    op.create_unique_constraint("uq_participants_bic", "participants", ["bic"])


def downgrade() -> None:
    op.drop_constraint("uq_participants_bic", "participants", type_="unique")
    op.drop_constraint("ck_participants_bic_format", "participants", type_="check")
    op.drop_column("participants", "bic")
