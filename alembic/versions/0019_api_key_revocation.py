"""An API key can be revoked: api_keys gains revoked_at, and last_used_at.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-30

A participant's keys are issued and revoked by the admin (POST and DELETE
/v1/participants/{name}/keys): a revoked key stays in the table with the instant it was
revoked, so the list of a participant's keys is also the record of when each was valid.
Keys issued before this are all valid: NULL. last_used_at says when a Kevin process last
found the key valid (to the minute), so that an old key is revoked once nothing uses it;
NULL for a key not used since.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("revoked_at", sa.DateTime(timezone=True),
                                        nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True),
                                        nullable=True))


def downgrade() -> None:
    # A revoked key must not come back to life: it goes with the column.
    op.execute("DELETE FROM api_keys WHERE revoked_at IS NOT NULL")
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("api_keys", "revoked_at")
