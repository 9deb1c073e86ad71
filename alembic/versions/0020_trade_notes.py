"""Notes on a trade, and a label on an API key to say whose they are.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30

The people who work a participant's exceptions write down what they did and learnt (the
counterparty called, an amendment is coming): trade_notes keeps each note with the
trade's version when it was written and who wrote it. A note is the participant's own,
never shown to the counterparty, and append-only like the trades: a note said stays
said. Who wrote it is the label the admin gave the key that wrote it (api_keys.label, a
person or a system, e.g. "alice" or "reconciliation bot"), else the key's id, or
"admin" for the admin token.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("label", sa.Text, nullable=True))
    op.create_check_constraint("label_length", "api_keys",
                               "char_length(label) BETWEEN 1 AND 64")
    op.create_table(
        "trade_notes",
        sa.Column("note_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("participant", sa.Text, sa.ForeignKey("participants.name"),
                  nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text, nullable=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.CheckConstraint("char_length(body) BETWEEN 1 AND 2000",
                           name="body_length"),
    )
    op.create_index("ix_trade_notes_participant_trade_id_note_id", "trade_notes",
                    ["participant", "trade_id", "note_id"])
    # Not append_only_refuse_change, which lets `latest` flip: a note has no versions.
    op.execute("""
        CREATE FUNCTION trade_notes_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'trade_notes is append-only: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER trade_notes_append_only BEFORE UPDATE OR DELETE ON trade_notes
        FOR EACH ROW EXECUTE FUNCTION trade_notes_refuse_change()
    """)
    op.execute("""
        CREATE TRIGGER trade_notes_no_truncate BEFORE TRUNCATE ON trade_notes
        FOR EACH STATEMENT EXECUTE FUNCTION trade_notes_refuse_change()
    """)


def downgrade() -> None:
    op.drop_table("trade_notes")
    op.execute("DROP FUNCTION trade_notes_refuse_change()")
    op.drop_constraint("label_length", "api_keys", type_="check")
    op.drop_column("api_keys", "label")
