"""Proposals: resolving by agreement. The proposals table (append-only), proposal updates
on the feed, the `agreed` reason, and the trigger that lapses an open proposal when
either of its trades gets a new version.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_REASONS = ("submitted", "amended", "cancelled", "matched", "mismatched", "unmatched",
               "forced", "broken", "replayed")
NEW_REASONS = (*OLD_REASONS, "agreed")

# Whatever writes a new version of a trade (a submission, an amendment, matching, a
# batch, a replay, an operator), every open proposal naming an older version of it
# lapses in the same statement, with its feed updates for both participants. A trigger,
# so that no write path can forget it. Statement-level with a transition table: one
# probe per INSERT statement, however many versions it writes; the EXISTS short-cut makes
# it free while nothing is open.
LAPSE_TRIGGER = """
CREATE FUNCTION proposals_lapse_on_new_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM proposals WHERE latest AND state = 'open') THEN
        RETURN NULL;
    END IF;
    WITH lapsing AS (
        SELECT DISTINCT p.proposal_id, p.version FROM proposals p
        JOIN new_versions n
          ON (n.participant = p.proposer AND n.trade_id = p.trade_id
              AND n.version > p.trade_version)
          OR (n.participant = p.counterparty AND n.trade_id = p.counterparty_trade_id
              AND n.version > p.counterparty_trade_version)
        WHERE p.latest AND p.state = 'open'
    ), flipped AS (
        UPDATE proposals p SET latest = false
        FROM lapsing l
        WHERE p.proposal_id = l.proposal_id AND p.version = l.version AND p.latest
        RETURNING p.*
    ), lapsed AS (
        INSERT INTO proposals (proposal_id, version, latest, kind, state, proposer, trade_id,
                               trade_version, counterparty, counterparty_trade_id,
                               counterparty_trade_version, pair_key, differences, comment,
                               actor, created_at)
        SELECT proposal_id, version + 1, true, kind, 'lapsed', proposer, trade_id,
               trade_version, counterparty, counterparty_trade_id,
               counterparty_trade_version, pair_key, differences,
               'a trade of the proposal has a new version', 'kevin', created_at
        FROM flipped
        RETURNING proposal_id, version, proposer, counterparty
    )
    INSERT INTO feed (participant, proposal_id, proposal_version)
    SELECT proposer, proposal_id, version FROM lapsed
    UNION ALL
    SELECT counterparty, proposal_id, version FROM lapsed;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "proposals",
        sa.Column("proposal_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("latest", sa.Boolean, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("proposer", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("trade_version", sa.Integer, nullable=False),
        sa.Column("counterparty", sa.Text, nullable=False),
        sa.Column("counterparty_trade_id", sa.Text, nullable=False),
        sa.Column("counterparty_trade_version", sa.Integer, nullable=False),
        sa.Column("pair_key", sa.Text, nullable=False),
        sa.Column("differences", pg.JSONB, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("proposal_id", "version", name="pk_proposals"),
        sa.CheckConstraint("version >= 1", name="ck_proposals_version_positive"),
        sa.CheckConstraint("kind IN ('match', 'cancel')", name="ck_proposals_kind_known"),
        sa.CheckConstraint(
            "state IN ('open', 'accepted', 'rejected', 'withdrawn', 'lapsed')",
            name="ck_proposals_state_known"),
        sa.CheckConstraint("(version = 1) = (state = 'open')", name="ck_proposals_open_first"),
    )
    op.create_index("ix_proposals_one_latest", "proposals", ["proposal_id"], unique=True,
                    postgresql_where=sa.text("latest"))
    op.create_index("ix_proposals_one_open", "proposals", ["kind", "pair_key"], unique=True,
                    postgresql_where=sa.text("latest AND state = 'open'"))
    op.create_index("ix_proposals_open_by_proposer", "proposals", ["proposer", "trade_id"],
                    postgresql_where=sa.text("latest AND state = 'open'"))
    op.create_index("ix_proposals_open_by_counterparty", "proposals",
                    ["counterparty", "counterparty_trade_id"],
                    postgresql_where=sa.text("latest AND state = 'open'"))
    op.create_index("ix_proposals_latest_by_proposer", "proposals",
                    ["proposer", "state", "proposal_id"], postgresql_where=sa.text("latest"))
    op.create_index("ix_proposals_latest_by_counterparty", "proposals",
                    ["counterparty", "state", "proposal_id"],
                    postgresql_where=sa.text("latest"))
    op.execute("""
        CREATE TRIGGER proposals_append_only BEFORE UPDATE OR DELETE ON proposals
        FOR EACH ROW EXECUTE FUNCTION append_only_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER proposals_no_truncate BEFORE TRUNCATE ON proposals
        FOR EACH STATEMENT EXECUTE FUNCTION append_only_refuse_change()
    """)

    # The feed carries proposal updates too: a row names a trade version or a proposal
    # version, never both; the sequencer orders both kinds in one commit order.
    op.alter_column("feed", "trade_id", nullable=True)
    op.alter_column("feed", "version", nullable=True)
    op.add_column("feed", sa.Column("proposal_id", pg.UUID(as_uuid=True), nullable=True))
    op.add_column("feed", sa.Column("proposal_version", sa.Integer, nullable=True))
    op.create_check_constraint(
        "ck_feed_one_subject", "feed",
        "(trade_id IS NOT NULL AND version IS NOT NULL AND proposal_id IS NULL"
        " AND proposal_version IS NULL) OR (trade_id IS NULL AND version IS NULL"
        " AND proposal_id IS NOT NULL AND proposal_version IS NOT NULL)")
    op.create_unique_constraint("uq_feed_participant_proposal_id_proposal_version", "feed",
                                ["participant", "proposal_id", "proposal_version"])

    op.drop_constraint("ck_trades_reason_known", "trades", type_="check")
    op.create_check_constraint("ck_trades_reason_known", "trades", f"reason IN {NEW_REASONS}")

    op.execute(LAPSE_TRIGGER)
    op.execute("""
        CREATE TRIGGER trades_lapse_proposals AFTER INSERT ON trades
        REFERENCING NEW TABLE AS new_versions
        FOR EACH STATEMENT EXECUTE FUNCTION proposals_lapse_on_new_version()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER trades_lapse_proposals ON trades")
    op.execute("DROP FUNCTION proposals_lapse_on_new_version()")
    op.execute("DELETE FROM feed WHERE proposal_id IS NOT NULL")
    op.drop_constraint("uq_feed_participant_proposal_id_proposal_version", "feed",
                       type_="unique")
    op.drop_constraint("ck_feed_one_subject", "feed", type_="check")
    op.drop_column("feed", "proposal_version")
    op.drop_column("feed", "proposal_id")
    op.alter_column("feed", "version", nullable=False)
    op.alter_column("feed", "trade_id", nullable=False)
    op.drop_constraint("ck_trades_reason_known", "trades", type_="check")
    op.create_check_constraint("ck_trades_reason_known", "trades", f"reason IN {OLD_REASONS}")
    op.execute("DROP TABLE proposals")
