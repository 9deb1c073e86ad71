"""The statements of bulk submission (``POST /v1/trades/batch``), named: each does for
many trades in ONE round trip what kevin.store.queries / matching_queries do for one.

Parameters are always bound. A batch travels as ONE jsonb parameter: an array holding
one array per line, its columns in order, written by orjson (kevin.store.bulk). The
first cut sent one array parameter per column, and asyncpg encodes an array element by
element, with isinstance checks against collections.abc on each: more than a third of a
batch's Python time went there. PostgreSQL takes the JSON apart faster than it unnests
the arrays, too. Numbers stay exact: JSON numbers become jsonb numerics, digits and
scale kept.
"""

import re
from collections.abc import Sequence

from kevin.store.matching_queries import MATCH_CANDIDATES
from kevin.store.queries import APPEND_VERSIONS, TRADE_COLUMNS


def _lines(columns: Sequence[tuple[str, str]], param: str = "$1") -> str:
    """A subquery with one row per line of the batch in ``param``: each (name, type) of
    ``columns`` taken from its position (jsonb as it is), then ord, the line's 1-based
    position."""
    fields = ", ".join(f"r->{i} AS {name}" if type_ == "jsonb" else
                       f"(r->>{i})::{type_} AS {name}"
                       for i, (name, type_) in enumerate(columns))
    return (f"(SELECT {fields}, ord "
            f"FROM jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS e(r, ord))")


# A version's columns as kevin.store.trades.NewVersion.args() gives them.
VERSION_COLUMNS = (
    ("participant", "text"), ("trade_id", "text"), ("version", "int"), ("status", "text"),
    ("reason", "text"), ("counterparty", "text"), ("side", "text"), ("product", "text"),
    ("quantity", "numeric"), ("price", "numeric"), ("currency", "text"),
    ("trade_date", "date"), ("settlement_date", "date"), ("location", "text"),
    ("attributes", "jsonb"), ("match_id", "uuid"), ("match_counterparty_trade_id", "text"),
    ("match_counterparty_version", "int"), ("mismatches", "jsonb"),
    ("rules_version", "int"), ("comment", "text"), ("replay_id", "uuid"), ("actor", "text"),
    ("first_submitted_at", "timestamptz"),
)

# A batch's new trades with their feed rows, in ONE statement: version 1 of each line
# and, for a line the batch matched, version 2 (matched) as well — version 1 then written
# already superseded (latest false), the state a flip would leave without the flip's
# UPDATE. Per line: version 1's columns (VERSION_COLUMNS), then version 2's match
# (match_id, counterparty trade_id and version, rules version), null for a line that
# rests. A trade_id that exists already is skipped (ON
# CONFLICT on the primary key), and so is its version 2: it is joined to the version 1
# rows this statement wrote. Version 2 keeps version 1's first_submitted_at.
# Feed rows go in by (recorded_at, version): a trade's version 2 row is made from its
# version 1 row's RETURNING, so per trade version 1 gets the earlier written_at, which
# orders the sequencer (feed_queries.SEQUENCE_BATCH).
# Only what the caller cannot know comes back, for the latest version of each trade
# written: a full row would be decoded (jsonb parsed) only to be rebuilt as it was sent.
INSERT_NEW_TRADES = f"""
WITH new AS (
    SELECT * FROM {_lines(VERSION_COLUMNS + (
        ("matched_id", "uuid"), ("matched_trade_id", "text"), ("matched_version", "int"),
        ("matched_rules_version", "int")))} AS n
), first AS (
    INSERT INTO trades (
        participant, trade_id, version, latest, status, reason, counterparty, side,
        product, quantity, price, currency, trade_date, settlement_date, location,
        attributes, match_id, match_counterparty_trade_id, match_counterparty_version,
        mismatches, rules_version, comment, replay_id, actor, first_submitted_at
    )
    SELECT participant, trade_id, version, matched_id IS NULL, status, reason,
           counterparty, side, product, quantity, price, currency, trade_date,
           settlement_date, location, attributes, match_id,
           match_counterparty_trade_id, match_counterparty_version, mismatches,
           rules_version, comment, replay_id, actor,
           coalesce(first_submitted_at, clock_timestamp())
    FROM new
    ORDER BY ord
    ON CONFLICT ON CONSTRAINT pk_trades DO NOTHING
    RETURNING participant, trade_id, version, latest, first_submitted_at, recorded_at
), second AS (
    INSERT INTO trades (
        participant, trade_id, version, latest, status, reason, counterparty, side,
        product, quantity, price, currency, trade_date, settlement_date, location,
        attributes, match_id, match_counterparty_trade_id, match_counterparty_version,
        mismatches, rules_version, comment, replay_id, actor, first_submitted_at
    )
    SELECT n.participant, n.trade_id, n.version + 1, true, 'matched', 'matched',
           n.counterparty, n.side, n.product, n.quantity, n.price, n.currency,
           n.trade_date, n.settlement_date, n.location, n.attributes, n.matched_id,
           n.matched_trade_id, n.matched_version, '[]'::jsonb, n.matched_rules_version,
           NULL, n.replay_id, n.actor, first.first_submitted_at
    FROM new n JOIN first USING (participant, trade_id)
    WHERE n.matched_id IS NOT NULL
    ORDER BY n.ord
    RETURNING participant, trade_id, version, latest, first_submitted_at, recorded_at
), written AS (
    SELECT * FROM first UNION ALL SELECT * FROM second
), update AS (
    INSERT INTO feed (participant, trade_id, version)
    SELECT participant, trade_id, version FROM written ORDER BY recorded_at, version
)
SELECT trade_id, version, first_submitted_at, recorded_at FROM written WHERE latest
"""

# queries.APPEND_VERSIONS with the batch's lines as jsonb (VERSION_COLUMNS), answering
# only which trades got their version: the versions a batch appends are the
# counterparties', which its answer never shows.
_UNNESTED = APPEND_VERSIONS[APPEND_VERSIONS.index("WITH new AS ("):
                            APPEND_VERSIONS.index("), flipped AS (")]
_APPENDED_ROWS = f"SELECT {TRADE_COLUMNS} FROM version"
assert APPEND_VERSIONS.rstrip().endswith(_APPENDED_ROWS), "APPEND_VERSIONS changed"
APPEND_VERSIONS_COUNTED = APPEND_VERSIONS.replace(
    _UNNESTED, f"WITH new AS (\n    SELECT * FROM {_lines(VERSION_COLUMNS)} AS n\n"
).rstrip().removesuffix(_APPENDED_ROWS) + "SELECT participant, trade_id FROM version\n"

# The latest versions of some of one participant's trades ($1), by trade_id ($2).
SELECT_LATEST_MANY = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND participant = $1 AND trade_id = ANY($2::text[])
"""

# matching_queries.LOCK_MATCH_KEY for many keys ($2, lock ids) in one round trip. The
# aggregate calls the lock function once per row in the array's order, which the caller
# sorts ascending — the same order lock_match_keys takes them in, so a batch and any
# other writer needing several keys cannot deadlock.
LOCK_MATCH_KEYS = """
SELECT count(pg_advisory_xact_lock($1::int, k)) FROM unnest($2::int[]) AS k
"""

# The latest rules of several products at once.
SELECT_LATEST_RULES_MANY = """
SELECT product, version, body, actor, recorded_at FROM rules
WHERE product = ANY($1::text[]) AND latest
"""

# --- candidates ---------------------------------------------------------------------
#
# What a batch needs to decide each new trade, in a form a set-based plan can serve:
#   1. its best candidate within tolerance, if any (the one ``decide`` would match);
#   2. whether anything agrees with it on the key fields and trade date at all — if so
#      and (1) found nothing, it mismatches, which the caller leaves to the one-trade-at-
#      a-time path (this flag may err towards yes: that path decides exactly anyway).

_RESTING = "t.latest AND t.status IN ('unmatched', 'mismatched')"

# Per line: product, currency, the resting side's participant (our counterparty), our
# participant, the opposite side, trade date.
_KEY_COLUMNS = (("product", "text"), ("currency", "text"), ("theirs", "text"),
                ("ours", "text"), ("side", "text"), ("trade_date", "date"))
_KEY_MATCH = f"""
    {_RESTING} AND t.product = b.product AND t.currency = b.currency
    AND t.participant = b.theirs AND t.counterparty = b.ours AND t.side = b.side
    AND t.trade_date = b.trade_date
"""

# The batch lines (1-based) that have some counterpart on the key fields and trade date.
# A semi-join the planner can run as one hash join (or index probes) for the batch.
WITH_COUNTERPARTS = f"""
SELECT b.ord FROM {_lines(_KEY_COLUMNS)} AS b
WHERE EXISTS (SELECT 1 FROM trades t WHERE {_KEY_MATCH})
"""

# Whether a live mismatch list names the candidate t (matching_queries.NAMING): if
# the batch matched it, those trades would need re-evaluating — the caller's cue to
# leave that line to the one-trade-at-a-time path.
_POINTED_AT = """
EXISTS (
    SELECT 1 FROM trades p
    WHERE p.latest AND p.status = 'mismatched'
      AND p.participant = t.counterparty AND p.counterparty = t.participant
      AND p.mismatches @> jsonb_build_array(
          jsonb_build_object('counterparty_trade_id', t.trade_id))
) AS pointed_at
"""

# Same for both candidate statements: never a pair an operator broke (as _NOT_BROKEN in
# matching_queries; b.ours / b.trade_id are the new trade).
_NOT_BROKEN = """
NOT EXISTS (
    SELECT 1 FROM broken_pairs bp
    WHERE (bp.participant_a = b.ours AND bp.trade_id_a = b.trade_id
           AND bp.participant_b = t.participant AND bp.trade_id_b = t.trade_id)
       OR (bp.participant_a = t.participant AND bp.trade_id_a = t.trade_id
           AND bp.participant_b = b.ours AND bp.trade_id_b = b.trade_id)
)
"""

# (1) for products matched exactly (no rules, or every tolerance zero): a candidate
# within tolerance is one equal on price, quantity, settlement date and location, and
# among equals invariant 7 orders by first submission, then trade_id. An equi-join,
# served by ix_trades_resting down to the price, one best row per line (DISTINCT ON).
# Per line, after the key: trade_id, price, quantity, settlement date, location.
EXACT_CANDIDATES = f"""
SELECT DISTINCT ON (b.ord) b.ord AS batch_ord, {", ".join(
    "t." + c.strip() for c in TRADE_COLUMNS.split(","))}, {_POINTED_AT}
FROM {_lines(_KEY_COLUMNS + (
    ("trade_id", "text"), ("price", "numeric"), ("quantity", "numeric"),
    ("settlement_date", "date"), ("location", "text")))} AS b
JOIN trades t ON {_KEY_MATCH}
    AND t.price = b.price AND t.quantity = b.quantity
    AND t.settlement_date = b.settlement_date
    AND t.location IS NOT DISTINCT FROM b.location
WHERE {_NOT_BROKEN}
ORDER BY b.ord, t.first_submitted_at, t.trade_id COLLATE "C"
"""

# (1) for products with tolerances: matching_queries.MATCH_CANDIDATES itself, run per
# line by LATERAL with its $n replaced by the line's n-th column (b.pn), so the two
# cannot drift apart. A LATERAL plan is generic, which MATCH_CANDIDATES's upper price
# bound allows for (it bounds the index scan whatever $13 is).
# The broken-pairs test inside it names the new trade as $7/$8 (b.p7, b.p8).
_AMOUNT_FORM = ("text", "numeric", "numeric", "numeric", "numeric")
_CANDIDATE_PARAMS = (
    "text", "text", "text", "text", "text", "date", "text", "text", "numeric", "numeric",
    "int", "numeric", "numeric", *_AMOUNT_FORM, "numeric", "numeric", *_AMOUNT_FORM,
    "date", "date", "bool", "text", "jsonb", "timestamptz",
)
_PER_TRADE = re.sub(r"[$](\d+)", r"b.p\1", MATCH_CANDIDATES)

TOLERANT_CANDIDATES = f"""
SELECT b.ord AS batch_ord, t.*, {_POINTED_AT}
FROM {_lines([(f"p{i}", t) for i, t in enumerate(_CANDIDATE_PARAMS, 1)])} AS b
CROSS JOIN LATERAL ({_PER_TRADE}) AS t
ORDER BY b.ord
"""
