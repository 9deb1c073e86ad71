"""A replay's record keeps the matching profiles it was run with, beside its rules.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30

A replay may be given profiles (for each pair they name, they replace the pair's stored
profiles); its record kept only the rules, so the record of an applied replay could not
say what decided the versions it wrote. Replays recorded before this have none: '{}'.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("replays", sa.Column("profiles", pg.JSONB, nullable=False,
                                       server_default=sa.text("'{}'::jsonb")))


def downgrade() -> None:
    op.drop_column("replays", "profiles")
