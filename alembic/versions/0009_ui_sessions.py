"""Web workbench sessions, stored server-side so several `kevin serve` processes share
them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("session_hash", sa.LargeBinary, nullable=False),
        sa.Column("participant", sa.Text, nullable=True),
        sa.Column("credential_hash", sa.LargeBinary, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_ui_sessions"),
        sa.ForeignKeyConstraint(["participant"], ["participants.name"],
                                name="fk_ui_sessions_participant_participants"),
    )
    # Expired sessions are deleted by range at each login.
    op.create_index("ix_ui_sessions_expires_at", "ui_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_sessions_expires_at", table_name="ui_sessions")
    op.drop_table("ui_sessions")
