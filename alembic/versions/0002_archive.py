"""Cold storage for old trade versions: trades_archive, the trade_history view, and the
one narrow exception to the no-DELETE trigger that archival needs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

`kevin archive --before T` moves non-latest versions recorded before T from `trades` into
`trades_archive` (same columns), one batch per transaction: copy, then delete exactly the
copied rows. The trigger on `trades` now lets a DELETE through only when all of these hold:
the transaction declared itself an archiver (``SET LOCAL kevin.archiving = 'on'``), the row
is not latest, and an identical row sits in `trades_archive` that this very transaction
inserted (its xmin is our transaction id). Nothing can be lost: a row leaves `trades` only
in the transaction that put its exact copy in the archive, and the archive itself refuses
UPDATE, DELETE and TRUNCATE. `trade_history` is every version ever recorded, hot or
archived; history, as-of and replay read it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = """participant, trade_id, version, latest, status, reason, counterparty, side,
    product, quantity, price, currency, trade_date, settlement_date, location, attributes,
    match_id, match_counterparty_trade_id, match_counterparty_version, mismatches,
    rules_version, comment, replay_id, actor, first_submitted_at, recorded_at"""

# Invariant 1 as 0001 wrote it, for the downgrade.
ORIGINAL_TRIGGER = """
    CREATE OR REPLACE FUNCTION trades_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.latest AND NOT NEW.latest
           AND (to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest') THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'trades is insert-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END $$
"""

# Invariant 1 with archival's exception. The checks run in the trigger, so no client code
# (nor a DBA's stray DELETE) can remove a version that is not safely in the archive.
# xmin = our transaction id: the copy was made by this transaction, not found lying around.
ARCHIVING_TRIGGER = """
    CREATE OR REPLACE FUNCTION trades_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF OLD.latest AND NOT NEW.latest
               AND (to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest') THEN
                RETURN NEW;
            END IF;
        ELSIF TG_OP = 'DELETE' THEN
            IF NOT OLD.latest
               AND current_setting('kevin.archiving', true) = 'on'
               AND EXISTS (
                   SELECT 1 FROM trades_archive a
                   WHERE (a.participant, a.trade_id, a.version)
                         = (OLD.participant, OLD.trade_id, OLD.version)
                     AND a.xmin = xid(pg_current_xact_id())
                     AND to_jsonb(a) = to_jsonb(OLD)) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION 'trades is insert-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation',
                  HINT = 'only kevin archive may move a non-latest version it has copied';
    END $$
"""


def upgrade() -> None:
    op.create_table(
        "trades_archive",
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
        sa.Column("attributes", pg.JSONB, nullable=False),
        sa.Column("match_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("match_counterparty_trade_id", sa.Text, nullable=True),
        sa.Column("match_counterparty_version", sa.Integer, nullable=True),
        sa.Column("mismatches", pg.JSONB, nullable=False),
        sa.Column("rules_version", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("replay_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("first_submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("participant", "trade_id", "version",
                                name="pk_trades_archive"),
        sa.CheckConstraint("NOT latest", name="ck_trades_archive_never_latest"),
    )
    # The archive is as immutable as the hot table: rows only ever arrive.
    op.execute("""
        CREATE FUNCTION trades_archive_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'trades_archive is insert-only: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER trades_archive_insert_only BEFORE UPDATE OR DELETE ON trades_archive
        FOR EACH ROW EXECUTE FUNCTION trades_archive_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER trades_archive_no_truncate BEFORE TRUNCATE ON trades_archive
        FOR EACH STATEMENT EXECUTE FUNCTION trades_archive_refuse_change()
    """)
    op.execute(ARCHIVING_TRIGGER)
    # Every version ever recorded. A row is in exactly one of the two tables at any
    # snapshot (it moves in one transaction), so UNION ALL never double-counts.
    op.execute(f"""
        CREATE VIEW trade_history AS
        SELECT {COLUMNS} FROM trades
        UNION ALL
        SELECT {COLUMNS} FROM trades_archive
    """)  # noqa: S608 (a constant column list)


def downgrade() -> None:
    op.execute("DROP VIEW trade_history")
    # Bring archived versions home first: a downgrade must not lose history.
    op.execute(f"INSERT INTO trades ({COLUMNS}) SELECT {COLUMNS} FROM trades_archive")  # noqa: S608
    op.execute(ORIGINAL_TRIGGER)
    op.execute("DROP TABLE trades_archive")
    op.execute("DROP FUNCTION trades_archive_refuse_change()")
