"""As-of reads of archived versions in one index probe, however long the history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

The as-of query asks for a trade's last version recorded by an instant. On the primary
key that is a backward walk from the newest version, filtering on recorded_at: cheap for
the handful of versions a trade keeps hot, linear for a long archived history. This index
answers it directly; it lives on the cold table only, so the hot write path pays nothing.

With two indexes on the archive that both begin (participant, trade_id), the trigger's
lookup of a row's copy must bind enough columns that either index finds it in one probe:
a generic plan made while the archive had no statistics may otherwise pick this index and
walk a trade's whole archived history for every row archived (quadratic on long
histories). So the copy is now also looked up by recorded_at — the copy must be identical
anyway, so nothing else changes.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _trigger(copy_lookup: str) -> str:
    return f"""
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
                   WHERE {copy_lookup}
                     AND a.xmin = xid(pg_current_xact_id())
                     AND to_jsonb(a) = to_jsonb(OLD)) THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION 'trades is insert-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation',
                  HINT = 'only kevin archive may move a non-latest version it has copied';
    END $$
    """  # noqa: S608 (constant conditions only)


BY_KEY = ("(a.participant, a.trade_id, a.version) "
          "= (OLD.participant, OLD.trade_id, OLD.version)")
BY_KEY_AND_TIME = ("(a.participant, a.trade_id, a.version, a.recorded_at) "
                   "= (OLD.participant, OLD.trade_id, OLD.version, OLD.recorded_at)")


def upgrade() -> None:
    op.create_index("ix_trades_archive_as_of", "trades_archive",
                    ["participant", "trade_id", "recorded_at"])
    op.execute(_trigger(BY_KEY_AND_TIME))


def downgrade() -> None:
    op.execute(_trigger(BY_KEY))
    op.drop_index("ix_trades_archive_as_of", table_name="trades_archive")
