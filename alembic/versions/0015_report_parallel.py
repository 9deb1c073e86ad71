"""The STP report in parallel: the earlier matched and mismatched versions by index, and an
aggregate that collects values across parallel workers.

`array_collect(x)` is `array_agg(x)` with a combine function: PostgreSQL 15's `array_agg`
has none, so a statement using it (or an ordered-set aggregate such as `percentile_cont`)
is aggregated by one process. With it, the report's one pass over a million trades is
aggregated by every worker, and the percentiles are taken over the collected waits.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

EARLIER = "status IN ('matched', 'mismatched')"


def upgrade() -> None:
    # array_append grows the state in place (an expanded array), so collecting is linear.
    op.execute("""
        CREATE AGGREGATE array_collect(anycompatible) (
            SFUNC = array_append, STYPE = anycompatiblearray, COMBINEFUNC = array_cat,
            PARALLEL = SAFE)
    """)
    op.create_index("ix_trades_earlier", "trades", ["trade_date", "participant"],
                    postgresql_where=sa.text(f"NOT latest AND {EARLIER}"))
    op.create_index("ix_trades_archive_earlier", "trades_archive",
                    ["trade_date", "participant"], postgresql_where=sa.text(EARLIER))


def downgrade() -> None:
    op.drop_index("ix_trades_archive_earlier", "trades_archive")
    op.drop_index("ix_trades_earlier", "trades")
    op.execute("DROP AGGREGATE array_collect(anycompatible)")
