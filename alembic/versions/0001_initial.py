"""Initial schema: participants, keys, the insert-only trades table, feed, rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from alembic import op
from kevin.schema import XID8

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "('unmatched', 'matched', 'mismatched', 'cancelled')"
REASONS = ("('submitted', 'amended', 'cancelled', 'matched', 'mismatched', 'unmatched', "
           "'forced', 'broken', 'replayed')")


def _now() -> sa.TextClause:
    return sa.text("clock_timestamp()")


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("name ~ '^[A-Z0-9_]{1,32}$'", name="ck_participants_name_format"),
        sa.PrimaryKeyConstraint("name", name="pk_participants"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.LargeBinary, nullable=False),
        sa.Column("participant", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("key_hash", name="pk_api_keys"),
        sa.ForeignKeyConstraint(["participant"], ["participants.name"],
                                name="fk_api_keys_participant_participants"),
    )
    op.create_table(
        "trades",
        sa.Column("participant", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("counterparty", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("price", sa.Numeric, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("trade_date", sa.Date, nullable=False),
        sa.Column("settlement_date", sa.Date, nullable=False),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("attributes", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("match_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("match_counterparty_trade_id", sa.Text, nullable=True),
        sa.Column("match_counterparty_version", sa.Integer, nullable=True),
        sa.Column("mismatches", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("rules_version", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("replay_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("first_submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("participant", "trade_id", "version", name="pk_trades"),
        sa.CheckConstraint("version >= 1", name="ck_trades_version_positive"),
        sa.CheckConstraint(f"status IN {STATUSES}", name="ck_trades_status_known"),
        sa.CheckConstraint(f"reason IN {REASONS}", name="ck_trades_reason_known"),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="ck_trades_side_known"),
        sa.CheckConstraint("quantity > 0 AND price > 0", name="ck_trades_positive_amounts"),
        sa.CheckConstraint("(status = 'matched') = (match_id IS NOT NULL)",
                           name="ck_trades_match_iff_matched"),
    )
    op.create_index("ix_trades_one_latest", "trades", ["participant", "trade_id"], unique=True,
                    postgresql_where=sa.text("latest"))
    op.create_index("ix_trades_resting", "trades",
                    ["product", "currency", "participant", "counterparty", "side", "price"],
                    postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"))
    op.create_index("ix_trades_match_id", "trades", ["match_id"],
                    postgresql_where=sa.text("latest AND match_id IS NOT NULL"))
    op.create_index("ix_trades_latest_by_participant", "trades",
                    ["participant", "status", "trade_id"], postgresql_where=sa.text("latest"))
    op.create_index("ix_trades_alleged", "trades", ["counterparty", "status"],
                    postgresql_where=sa.text("latest"))

    # Invariant 1, enforced by the database itself: the one UPDATE allowed flips `latest`
    # from true to false and changes nothing else; DELETE and TRUNCATE are refused.
    op.execute("""
        CREATE FUNCTION trades_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.latest AND NOT NEW.latest
               AND (to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest') THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'trades is insert-only: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER trades_insert_only BEFORE UPDATE OR DELETE ON trades
        FOR EACH ROW EXECUTE FUNCTION trades_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER trades_no_truncate BEFORE TRUNCATE ON trades
        FOR EACH STATEMENT EXECUTE FUNCTION trades_refuse_change()
    """)

    op.create_table(
        "feed",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("txid", XID8, nullable=False, server_default=sa.text("pg_current_xact_id()")),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("participant", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_feed"),
        sa.UniqueConstraint("participant", "trade_id", "version",
                            name="uq_feed_participant_trade_id_version"),
        sa.UniqueConstraint("seq", name="uq_feed_seq"),
    )
    op.create_index("ix_feed_participant_seq", "feed", ["participant", "seq"],
                    postgresql_where=sa.text("seq IS NOT NULL"))
    op.create_index("ix_feed_unsequenced", "feed", ["id"], postgresql_where=sa.text("seq IS NULL"))

    op.create_table(
        "rules",
        sa.Column("product", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.Column("body", pg.JSONB, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("product", "version", name="pk_rules"),
    )
    op.create_index("ix_rules_one_latest", "rules", ["product"], unique=True,
                    postgresql_where=sa.text("latest"))
    op.create_table(
        "broken_pairs",
        sa.Column("participant_a", sa.Text, nullable=False),
        sa.Column("trade_id_a", sa.Text, nullable=False),
        sa.Column("participant_b", sa.Text, nullable=False),
        sa.Column("trade_id_b", sa.Text, nullable=False),
        sa.Column("match_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("participant_a", "trade_id_a", "participant_b", "trade_id_b",
                                name="pk_broken_pairs"),
    )
    op.create_table(
        "replays",
        sa.Column("replay_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rules", pg.JSONB, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("replay_id", name="pk_replays"),
    )


def downgrade() -> None:
    for table in ("replays", "broken_pairs", "rules", "feed"):
        op.drop_table(table)
    op.execute("DROP TABLE trades")
    op.execute("DROP FUNCTION trades_refuse_change()")
    op.drop_table("api_keys")
    op.drop_table("participants")
