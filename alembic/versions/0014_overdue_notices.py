"""Chasers: the overdue notices (one per trade and trade date, unique, so however many
scanners run only one is ever recorded), `overdue` updates on the feed, and the partial
index of open trades by trade date the scan walks.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OLD_SUBJECT = (
    "(trade_id IS NOT NULL AND version IS NOT NULL AND proposal_id IS NULL"
    " AND proposal_version IS NULL) OR (trade_id IS NULL AND version IS NULL"
    " AND proposal_id IS NOT NULL AND proposal_version IS NOT NULL)")
NEW_SUBJECT = (
    "(trade_id IS NOT NULL AND version IS NOT NULL AND proposal_id IS NULL"
    " AND proposal_version IS NULL AND notice_id IS NULL)"
    " OR (trade_id IS NULL AND version IS NULL AND proposal_id IS NOT NULL"
    " AND proposal_version IS NOT NULL AND notice_id IS NULL)"
    " OR (trade_id IS NULL AND version IS NULL AND proposal_id IS NULL"
    " AND proposal_version IS NULL AND notice_id IS NOT NULL)")


def upgrade() -> None:
    op.create_table(
        "overdue_notices",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("participant", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("trade_date", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("counterparty", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("cutoff_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("id", name="pk_overdue_notices"),
        sa.UniqueConstraint("participant", "trade_id", "trade_date",
                            name="uq_overdue_notices_participant_trade_id_trade_date"),
        sa.CheckConstraint("status IN ('unmatched', 'mismatched')",
                           name="ck_overdue_notices_status_open"),
    )
    # A notice is a record of what was said: never changed, never removed.
    op.execute("""
        CREATE FUNCTION overdue_notices_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'overdue_notices is append-only: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER overdue_notices_append_only BEFORE UPDATE OR DELETE ON overdue_notices
        FOR EACH ROW EXECUTE FUNCTION overdue_notices_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER overdue_notices_no_truncate BEFORE TRUNCATE ON overdue_notices
        FOR EACH STATEMENT EXECUTE FUNCTION overdue_notices_refuse_change()
    """)

    op.add_column("feed", sa.Column("notice_id", sa.BigInteger, nullable=True))
    op.drop_constraint("ck_feed_one_subject", "feed", type_="check")
    op.create_check_constraint("ck_feed_one_subject", "feed", NEW_SUBJECT)
    op.create_unique_constraint("uq_feed_participant_notice_id", "feed",
                                ["participant", "notice_id"])

    op.create_index("ix_trades_open_by_trade_date", "trades",
                    ["trade_date", "participant", "trade_id"],
                    postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"))


def downgrade() -> None:
    op.drop_index("ix_trades_open_by_trade_date", "trades")
    op.execute("DELETE FROM feed WHERE notice_id IS NOT NULL")
    op.drop_constraint("uq_feed_participant_notice_id", "feed", type_="unique")
    op.drop_constraint("ck_feed_one_subject", "feed", type_="check")
    op.create_check_constraint("ck_feed_one_subject", "feed", OLD_SUBJECT)
    op.drop_column("feed", "notice_id")
    op.execute("DROP TABLE overdue_notices")
    op.execute("DROP FUNCTION overdue_notices_refuse_change()")
