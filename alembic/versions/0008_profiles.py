"""Matching profiles: versioned, append-only tolerances agreed by a pair of participants.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.Column("retired", sa.Boolean, nullable=False),
        sa.Column("participant_a", sa.Text, nullable=False),
        sa.Column("participant_b", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("body", pg.JSONB, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("name", "version", name="pk_profiles"),
        sa.ForeignKeyConstraint(["participant_a"], ["participants.name"],
                                name="fk_profiles_participant_a_participants"),
        sa.ForeignKeyConstraint(["participant_b"], ["participants.name"],
                                name="fk_profiles_participant_b_participants"),
        sa.CheckConstraint("version >= 1", name="ck_profiles_version_positive"),
        sa.CheckConstraint("participant_a < participant_b", name="ck_profiles_pair_ordered"),
    )
    op.create_index("ix_profiles_one_latest", "profiles", ["name"], unique=True,
                    postgresql_where=sa.text("latest"))
    # One live claim per (pair, product), enforced by the database under concurrency.
    op.create_index("ix_profiles_one_claim", "profiles",
                    ["participant_a", "participant_b", "product"], unique=True,
                    postgresql_where=sa.text("latest AND NOT retired"))
    op.create_index("ix_profiles_pair_as_of", "profiles",
                    ["participant_a", "participant_b", "product", "recorded_at"])
    # Append-only like trades: the one UPDATE allowed flips `latest` from true to false
    # and changes nothing else; DELETE and TRUNCATE are refused.
    op.execute("""
        CREATE FUNCTION append_only_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.latest AND NOT NEW.latest
               AND (to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest') THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER profiles_append_only BEFORE UPDATE OR DELETE ON profiles
        FOR EACH ROW EXECUTE FUNCTION append_only_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER profiles_no_truncate BEFORE TRUNCATE ON profiles
        FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change()
    """)


def downgrade() -> None:
    op.execute("DROP TABLE profiles")
    op.execute("DROP FUNCTION append_only_refuse_change()")
