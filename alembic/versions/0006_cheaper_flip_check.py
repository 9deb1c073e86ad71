"""Invariant 1's trigger, the same rule at a fraction of the cost per latest flip.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

The one UPDATE allowed on `trades` flips `latest` from true to false and changes nothing
else. 0001, 0002 and 0005 checked "nothing else" by building two jsonb documents per row
((to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest')): about 27 µs of a flip's ~48 µs
in a 10,000-row bulk flip measured here, the largest single cost of writing matches in
bulk. This version compares the rows themselves: it sets NEW.latest back to true, asks
`NEW IS NOT DISTINCT FROM OLD` (every column, NULL-safe, whatever columns the table
gains later), and on success returns NEW with latest false again. The DELETE branch
(archival's exception, 0002 and 0005) is unchanged.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_DELETE_BRANCH = """
        ELSIF TG_OP = 'DELETE' THEN
            IF NOT OLD.latest
               AND current_setting('kevin.archiving', true) = 'on'
               AND EXISTS (
                   SELECT 1 FROM trades_archive a
                   WHERE (a.participant, a.trade_id, a.version, a.recorded_at)
                         = (OLD.participant, OLD.trade_id, OLD.version, OLD.recorded_at)
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

ROW_COMPARING = """
    CREATE OR REPLACE FUNCTION trades_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF OLD.latest AND NOT NEW.latest THEN
                NEW.latest := true;  -- only to compare every other column at once
                IF NEW IS NOT DISTINCT FROM OLD THEN
                    NEW.latest := false;
                    RETURN NEW;
                END IF;
            END IF;""" + _DELETE_BRANCH

JSONB_COMPARING = """
    CREATE OR REPLACE FUNCTION trades_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF OLD.latest AND NOT NEW.latest
               AND (to_jsonb(NEW) - 'latest') = (to_jsonb(OLD) - 'latest') THEN
                RETURN NEW;
            END IF;""" + _DELETE_BRANCH


def upgrade() -> None:
    op.execute(ROW_COMPARING)


def downgrade() -> None:
    op.execute(JSONB_COMPARING)
