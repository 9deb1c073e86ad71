"""The schema as SQLAlchemy Core tables.

This module is the model that alembic migrations build (``alembic/versions``) and that the
migration test compares against a migrated database. Queries live in ``kevin.store.queries``.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg


class XID8(sa.types.UserDefinedType[str]):
    """PostgreSQL's 64-bit transaction id (``xid8``, PostgreSQL 13+)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "xid8"


# Let reflection (the migration test, alembic autogenerate) recognise the type.
pg.base.ischema_names["xid8"] = XID8

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

STATUSES = ("unmatched", "matched", "mismatched", "cancelled")
REASONS = (
    "submitted", "amended", "cancelled", "matched", "mismatched",
    "unmatched", "forced", "broken", "replayed", "agreed",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


participants = sa.Table(
    "participants",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    # ISO 9362, in its 11-character form: SWIFT MT300 and FpML name parties by BIC.
    sa.Column("bic", sa.Text, nullable=True, unique=True),
    sa.CheckConstraint("name ~ '^[A-Z0-9_]{1,32}$'", name="name_format"),
    sa.CheckConstraint("bic ~ '^[A-Z]{6}[A-Z0-9]{2}[A-Z0-9]{3}$'", name="bic_format"),
)

# Keys are random 256-bit tokens, so a plain SHA-256 is a sound one-way hash here (no
# password stretching is needed); the key itself is never stored. A revoked key stays,
# with when it was revoked (alembic 0019): a participant's keys are also the record of
# when each was valid. A key's public id is the first 8 bytes of its hash, in hex.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.LargeBinary, primary_key=True),
    sa.Column("participant", sa.Text, sa.ForeignKey("participants.name"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    # When a Kevin process last found the key valid, to the minute (alembic 0019).
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    # Whom the admin issued the key to (a person, a system), named as the author of what
    # the key writes (trade notes; alembic 0020).
    sa.Column("label", sa.Text, nullable=True),
    sa.CheckConstraint("char_length(label) BETWEEN 1 AND 64", name="label_length"),
)

trades = sa.Table(
    "trades",
    metadata,
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
    # clock_timestamp(), not now(): a version derived from another is inserted after that
    # one committed, so recorded_at grows with the version and as-of reads stay exact.
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.PrimaryKeyConstraint("participant", "trade_id", "version"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint(_in("status", STATUSES), name="status_known"),
    sa.CheckConstraint(_in("reason", REASONS), name="reason_known"),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="side_known"),
    sa.CheckConstraint("quantity > 0 AND price > 0", name="positive_amounts"),
    sa.CheckConstraint("(status = 'matched') = (match_id IS NOT NULL)", name="match_iff_matched"),
)

# Exactly one latest row per trade (invariant 2).
sa.Index(
    "ix_trades_one_latest", trades.c.participant, trades.c.trade_id,
    unique=True, postgresql_where=trades.c.latest,
)
# The matching key: resting, live trades by product, currency, participants, side and price.
sa.Index(
    "ix_trades_resting", trades.c.product, trades.c.currency, trades.c.participant,
    trades.c.counterparty, trades.c.side, trades.c.price,
    postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"),
)
# The oldest resting trade, in one probe (/metrics reports its age at every scrape).
sa.Index("ix_trades_resting_since", trades.c.first_submitted_at,
         postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"))
# A live match is found from its id (break, check).
sa.Index("ix_trades_match_id", trades.c.match_id,
         postgresql_where=sa.text("latest AND match_id IS NOT NULL"))
# Trades whose mismatch list names a given trade (re-evaluated when it changes).
sa.Index("ix_trades_mismatch_targets", trades.c.mismatches, postgresql_using="gin",
         postgresql_ops={"mismatches": "jsonb_path_ops"},
         postgresql_where=sa.text("latest AND status = 'mismatched'"))
# Listing by status and product for a participant without scanning history.
sa.Index("ix_trades_latest_by_participant", trades.c.participant, trades.c.status,
         trades.c.trade_id, postgresql_where=trades.c.latest)
# Alleged: live trades that name a participant as counterparty.
sa.Index("ix_trades_alleged", trades.c.counterparty, trades.c.status,
         postgresql_where=trades.c.latest)

# The STP report: a range of trade dates, for one participant or all (alembic 0012); and
# the few earlier versions it reads besides the latest: those matched or mismatched
# (alembic 0015, which also creates the report's `array_collect` aggregate).
sa.Index("ix_trades_trade_date", trades.c.trade_date, trades.c.participant)
sa.Index("ix_trades_earlier", trades.c.trade_date, trades.c.participant,
         postgresql_where=sa.text("NOT latest AND status IN ('matched', 'mismatched')"))
# The overdue scan: the open trades of given trade dates, walked in key order (alembic 0014).
sa.Index("ix_trades_open_by_trade_date", trades.c.trade_date, trades.c.participant,
         trades.c.trade_id,
         postgresql_where=sa.text("latest AND status IN ('unmatched', 'mismatched')"))

# One update per trade version, written in the version's own transaction (invariant 5),
# and one per participant of each proposal version (alembic 0011): a row names either a
# trade version or a proposal version.
# `seq` is the public, gap-tolerant, strictly increasing position; it is assigned after
# commit by the feed sequencer (kevin.feed.sequencer), which explains why.
feed = sa.Table(
    "feed",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    # The writing transaction's id; the sequencer only orders rows whose transaction is
    # older than every transaction still running (see kevin.feed.sequencer).
    sa.Column("txid", XID8, nullable=False, server_default=sa.text("pg_current_xact_id()")),
    sa.Column("seq", sa.BigInteger, nullable=True),
    sa.Column("participant", sa.Text, nullable=False),
    sa.Column("trade_id", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    # Inserted after the version it announces, so per trade it grows with the version.
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.Column("proposal_id", pg.UUID(as_uuid=True), nullable=True),
    sa.Column("proposal_version", sa.Integer, nullable=True),
    # An overdue notice (alembic 0014): one update for the trade's participant, one for
    # its counterparty.
    sa.Column("notice_id", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("participant", "trade_id", "version"),
    sa.CheckConstraint(
        "(trade_id IS NOT NULL AND version IS NOT NULL AND proposal_id IS NULL"
        " AND proposal_version IS NULL AND notice_id IS NULL)"
        " OR (trade_id IS NULL AND version IS NULL AND proposal_id IS NOT NULL"
        " AND proposal_version IS NOT NULL AND notice_id IS NULL)"
        " OR (trade_id IS NULL AND version IS NULL AND proposal_id IS NULL"
        " AND proposal_version IS NULL AND notice_id IS NOT NULL)", name="one_subject"),
)
# A proposal version's update once per participant, an overdue notice's likewise: unique
# among the rows that name one (alembic 0016), so that a trade version's row, nearly every
# row, writes no entry of them when inserted or sequenced.
sa.Index("uq_feed_participant_proposal_id_proposal_version", feed.c.participant,
         feed.c.proposal_id, feed.c.proposal_version, unique=True,
         postgresql_where=feed.c.proposal_id.isnot(None))
sa.Index("uq_feed_participant_notice_id", feed.c.participant, feed.c.notice_id, unique=True,
         postgresql_where=feed.c.notice_id.isnot(None))
# seq is unique among the rows that have one (alembic 0017): an unsequenced row writes no
# entry, and the sequencer's backlog is read only from ix_feed_unsequenced.
sa.Index("uq_feed_seq", feed.c.seq, unique=True, postgresql_where=feed.c.seq.isnot(None))
sa.Index("ix_feed_participant_seq", feed.c.participant, feed.c.seq,
         postgresql_where=feed.c.seq.isnot(None))
# The sequencer's backlog, in the order it hands out seqs (kevin.store.feed_queries).
sa.Index("ix_feed_unsequenced", feed.c.written_at, feed.c.id,
         postgresql_where=feed.c.seq.is_(None))

# The NATS relay's durable position: the highest seq JetStream acknowledged, per relay.
relay_checkpoints = sa.Table(
    "relay_checkpoints",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    # Updates published as stubs, too large for the transport (kevin.feed.relay).
    sa.Column("stubbed", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)

# Matching rules per product, versioned and append-only like trades.
rules = sa.Table(
    "rules",
    metadata,
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("latest", sa.Boolean, nullable=False),
    sa.Column("body", pg.JSONB, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.PrimaryKeyConstraint("product", "version"),
)
sa.Index("ix_rules_one_latest", rules.c.product, unique=True, postgresql_where=rules.c.latest)

# Pairs an operator broke; matching never pairs them again.
broken_pairs = sa.Table(
    "broken_pairs",
    metadata,
    sa.Column("participant_a", sa.Text, nullable=False),
    sa.Column("trade_id_a", sa.Text, nullable=False),
    sa.Column("participant_b", sa.Text, nullable=False),
    sa.Column("trade_id_b", sa.Text, nullable=False),
    sa.Column("match_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.PrimaryKeyConstraint("participant_a", "trade_id_a", "participant_b", "trade_id_b"),
)

# Every applied replay: which rules, who, when; replayed versions point here.
replays = sa.Table(
    "replays",
    metadata,
    sa.Column("replay_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rules", pg.JSONB, nullable=False),
    sa.Column("profiles", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
)

# Cold storage for old versions (`kevin archive`, alembic 0002): the same columns as
# trades, no defaults (every value is copied), insert-only by trigger. A DBA may move it to
# a cheaper tablespace (ALTER TABLE trades_archive SET TABLESPACE ...) or dump it; reads go
# through the `trade_history` view (trades UNION ALL trades_archive), which alembic 0002
# creates and this model does not describe (SQLAlchemy Core has no view construct).
trades_archive = sa.Table(
    "trades_archive",
    metadata,
    *(sa.Column(c.name, c.type, nullable=c.nullable) for c in trades.columns),
    sa.PrimaryKeyConstraint("participant", "trade_id", "version"),
    sa.CheckConstraint("NOT latest", name="never_latest"),
)
# As-of over a long archived history in one probe (alembic 0005; see SELECT_AS_OF).
sa.Index("ix_trades_archive_as_of", trades_archive.c.participant, trades_archive.c.trade_id,
         trades_archive.c.recorded_at)

sa.Index("ix_trades_archive_trade_date", trades_archive.c.trade_date,
         trades_archive.c.participant)
sa.Index("ix_trades_archive_earlier", trades_archive.c.trade_date,
         trades_archive.c.participant,
         postgresql_where=sa.text("status IN ('matched', 'mismatched')"))

# Matching profiles: tolerances a pair of participants agreed, for one product or "*".
# Versioned and append-only like rules (the only UPDATE flips `latest`, by trigger); a
# DELETE appends a `retired` version. participant_a < participant_b: one spelling per pair.
profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("latest", sa.Boolean, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False),
    sa.Column("participant_a", sa.Text, sa.ForeignKey("participants.name"), nullable=False),
    sa.Column("participant_b", sa.Text, sa.ForeignKey("participants.name"), nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("body", pg.JSONB, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.PrimaryKeyConstraint("name", "version"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint("participant_a < participant_b", name="pair_ordered"),
)
sa.Index("ix_profiles_one_latest", profiles.c.name, unique=True,
         postgresql_where=profiles.c.latest)
# At most one live profile claims a (pair, product): the database refuses a second, also
# when two writers of different names race (the loser's insert fails: 409).
sa.Index("ix_profiles_one_claim", profiles.c.participant_a, profiles.c.participant_b,
         profiles.c.product, unique=True,
         postgresql_where=sa.text("latest AND NOT retired"))
# As-of reads of a pair's profiles (replay, kevin check: what was in force at an instant).
sa.Index("ix_profiles_pair_as_of", profiles.c.participant_a, profiles.c.participant_b,
         profiles.c.product, profiles.c.recorded_at)
# Web workbench sessions (alembic 0011): a browser's login, kept server-side so every
# `kevin serve` process sees it. The cookie carries a random token; only its SHA-256 is
# stored. credential_hash is the hash of the API key (or admin token) that logged in, so
# a session ends with its credential. participant is NULL for the admin.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("session_hash", sa.LargeBinary, primary_key=True),
    sa.Column("participant", sa.Text, sa.ForeignKey("participants.name"), nullable=True),
    sa.Column("credential_hash", sa.LargeBinary, nullable=False),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_ui_sessions_expires_at", ui_sessions.c.expires_at)

# Proposals (alembic 0011): one participant proposes to match two trades, or to cancel
# their match; the other accepts or rejects. Append-only like trades: every state change
# is a new version (the only UPDATE flips `latest`, by trigger). A trigger on trades
# lapses an open proposal when either trade gets a new version.
# Notes on a trade (alembic 0020): what the people working a participant's exceptions
# record about one of its trades, with the trade's version when written and who wrote it
# (the writing key's label, else its key id; "admin" for the admin token). The
# participant's own, never shown to the counterparty; append-only, by trigger.
trade_notes = sa.Table(
    "trade_notes",
    metadata,
    sa.Column("note_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("participant", sa.Text, sa.ForeignKey("participants.name"), nullable=False),
    sa.Column("trade_id", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("author", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=True),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.CheckConstraint("char_length(body) BETWEEN 1 AND 2000", name="body_length"),
)
sa.Index("ix_trade_notes_participant_trade_id_note_id", trade_notes.c.participant,
         trade_notes.c.trade_id, trade_notes.c.note_id)

proposals = sa.Table(
    "proposals",
    metadata,
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
    # The two trades in one spelling whichever side proposes (kevin.domain.proposals).
    sa.Column("pair_key", sa.Text, nullable=False),
    sa.Column("differences", pg.JSONB, nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.PrimaryKeyConstraint("proposal_id", "version"),
    sa.CheckConstraint("version >= 1", name="version_positive"),
    sa.CheckConstraint("kind IN ('match', 'cancel')", name="kind_known"),
    sa.CheckConstraint("state IN ('open', 'accepted', 'rejected', 'withdrawn', 'lapsed')",
                       name="state_known"),
    sa.CheckConstraint("(version = 1) = (state = 'open')", name="open_first"),
)
sa.Index("ix_proposals_one_latest", proposals.c.proposal_id, unique=True,
         postgresql_where=proposals.c.latest)
# No two open proposals of one kind for the same two trades, whichever side proposed: the
# database refuses the second, also when both sides propose at once.
sa.Index("ix_proposals_one_open", proposals.c.kind, proposals.c.pair_key, unique=True,
         postgresql_where=sa.text("latest AND state = 'open'"))
# What the lapse trigger probes for each new trade version, from either side.
sa.Index("ix_proposals_open_by_proposer", proposals.c.proposer, proposals.c.trade_id,
         postgresql_where=sa.text("latest AND state = 'open'"))
sa.Index("ix_proposals_open_by_counterparty", proposals.c.counterparty,
         proposals.c.counterparty_trade_id,
         postgresql_where=sa.text("latest AND state = 'open'"))
# GET /v1/proposals: those a participant made or received, by state.
sa.Index("ix_proposals_latest_by_proposer", proposals.c.proposer, proposals.c.state,
         proposals.c.proposal_id, postgresql_where=proposals.c.latest)
sa.Index("ix_proposals_latest_by_counterparty", proposals.c.counterparty, proposals.c.state,
         proposals.c.proposal_id, postgresql_where=proposals.c.latest)

# Chasers (alembic 0014): one notice per trade and trade date, when the trade's cut-off
# has passed while it was unmatched or mismatched. The unique key decides: however many
# scanners run, a second insert of the same notice does nothing, and the notice's two
# feed updates (participant and counterparty) are written in its statement. A trade
# amended to another trade date is a new key: it is chased again once that date's cut-off
# passes. Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE).
overdue_notices = sa.Table(
    "overdue_notices",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("participant", sa.Text, nullable=False),
    sa.Column("trade_id", sa.Text, nullable=False),
    sa.Column("trade_date", sa.Date, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),  # the open version that was late
    sa.Column("counterparty", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("cutoff_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.text("clock_timestamp()")),
    sa.UniqueConstraint("participant", "trade_id", "trade_date"),
    sa.CheckConstraint("status IN ('unmatched', 'mismatched')", name="status_open"),
)
