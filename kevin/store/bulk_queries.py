"""The statements of bulk submission (``POST /v1/trades/batch``), named: each does for
many trades in ONE round trip what kevin.store.queries / matching_queries do for one.

Parameters are always bound. A batch travels as ONE jsonb parameter (kevin.store.named
.lines_source): an array holding one array per line, its columns in the order of the
column list the statement is written from. Numbers stay exact: JSON numbers become jsonb
numerics, digits and scale kept.
"""

from kevin.store.named import lines_source
from kevin.store.queries import TRADE_COLUMNS, VERSION_COLUMNS

_NAMES = ", ".join(name for name, _ in VERSION_COLUMNS)
# The same columns read from a batch's lines; a version that does not carry its trade's
# first submission (a new trade's first) takes the database's clock.
_SELECTED = ", ".join("coalesce(first_submitted_at, clock_timestamp())"
                      if name == "first_submitted_at" else name for name, _ in VERSION_COLUMNS)

# When each new trade of a batch ($1: participant, trade_id of each, in line order) is
# first submitted — the database's clock, read line after line (a volatile expression of
# the target list is evaluated in the order of the ORDER BY) — and whether its trade_id
# is taken already (another writer created it meanwhile: any version of it is in trades,
# its latest always). Nothing is written: a batch's version 1 goes in with the versions
# matching writes after it (WRITE_VERSIONS), superseded already when its line matched
# at once. Taken is a scalar subquery, one probe of pk_trades a line (no partial index
# on latest can serve it: on a table without statistics the planner took one that
# scans the participant's every latest trade); an EXISTS would be planned there as a
# hash of the whole table.
_NEW_TRADES = (("participant", "text"), ("trade_id", "text"))
FIRST_SUBMISSIONS = f"""
SELECT n.participant, n.trade_id, clock_timestamp() AS first_submitted_at,
       (SELECT true FROM trades t
        WHERE t.participant = n.participant AND t.trade_id = n.trade_id
        LIMIT 1) IS NOT NULL AS taken
FROM {lines_source(_NEW_TRADES)} AS n
ORDER BY n.ord
"""

# A group commit's FIRST_SUBMISSIONS (its new trades, $1) with SELECT_BROKEN_AMONG's
# pairs ($2) as rows of their own (kind 'broken'), in one round trip. Nothing is
# written: the group's version 1s go in with the versions its matching derives, in its
# WRITE_VERSIONS at the end, so that its transaction takes an xid only there — the feed
# sequencer numbers no row of a transaction newer than the oldest still in flight, so
# an xid held through the group's reads and matching would hold back every other
# writer's rows committed meanwhile (docs/performance.md, change 53). FIRST_SUBMISSIONS
# stays a subquery of its own (its ORDER BY keeps it from being flattened), its clock
# read line after line. The broken pairs must be read under the match-key locks (an
# operator's break holds them while it records one), so not in OPEN_GROUP, whose
# snapshot was taken before its locks were granted: this statement starts after they
# were, and its snapshot sees every break committed before.
FIRST_SUBMISSIONS_AND_BROKEN = f"""
SELECT 'first' AS kind, participant, trade_id, first_submitted_at, taken,
       NULL::text AS participant_b, NULL::text AS trade_id_b
FROM ({FIRST_SUBMISSIONS}) AS f
UNION ALL
SELECT 'broken', participant_a, trade_id_a, NULL, NULL, participant_b, trade_id_b
FROM broken_pairs
WHERE participant_a = ANY($2::text[]) AND participant_b = ANY($2::text[])
"""

# Every version a batch's matching wrote, in the order it wrote them, with their feed
# rows, in ONE statement with the flips of the versions they derive from (invariant 3;
# as queries.APPEND_VERSIONS does for a single decision):
# * flipped: one UPDATE for all ($1: participant, trade_id, version of each trade's
#   stored version), each row re-checked as still latest; a row another writer flipped
#   first (the UPDATE waits for it to commit) is not counted. Each row is found by its
#   own probe of ix_trades_one_latest (the LATERAL, kept apart by OFFSET 0): joined
#   with the lines, which the planner guesses at 100, the UPDATE was a hash join over
#   every latest row of the table — a few ms a group on a young table, growing with it
#   until the statistics turned it (docs/performance.md, change 39).
# * version: inserted only if every flip ($3 of them) happened — the scalar subquery
#   runs the flips first —, else nothing: the caller compares the rows with the lines
#   it sent and abandons the transaction. A trade's last version is latest, those before
#   it (a trade mismatched, then matched later in the batch) are history already; the
#   partial unique index (one latest row per trade) treats the flipped row as deleted by
#   this statement.
# Every version comes back with its recorded_at, the one column the caller cannot know
# (a group commit answers a request with a version a later request of the group derived
# another from).
_FLIPS = (("participant", "text"), ("trade_id", "text"), ("version", "int"))
WRITE_VERSIONS = f"""
WITH flipped AS (
    UPDATE trades SET latest = false
    WHERE trades.latest AND (participant, trade_id, version) IN (
        SELECT found.* FROM {lines_source(_FLIPS)} AS f
        CROSS JOIN LATERAL (
            SELECT participant, trade_id, version FROM trades s
            WHERE s.participant = f.participant AND s.trade_id = f.trade_id
              AND s.version = f.version AND s.latest
            OFFSET 0
        ) AS found)
    RETURNING 1
), new AS (
    SELECT * FROM {lines_source((*VERSION_COLUMNS, ("latest", "bool")), "$2")} AS n
), version AS (
    INSERT INTO trades (latest, {_NAMES})
    SELECT latest, {_SELECTED}
    FROM new
    WHERE (SELECT count(*) FROM flipped) = $3::int
    ORDER BY ord
    RETURNING participant, trade_id, version, latest, recorded_at
), update AS (
    INSERT INTO feed (participant, trade_id, version)
    SELECT participant, trade_id, version FROM version ORDER BY recorded_at, version
)
SELECT participant, trade_id, version, recorded_at FROM version
"""

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

# A group commit's opening (kevin.engine.group_commit): LOCK_MATCH_KEYS, then the latest
# rules of its products ($3) and every live profile naming one of its writers ($4), as
# one row each (kind, row as jsonb), in one round trip. The first branch takes the locks
# (an Append runs its branches in order, and the CTE is computed once), so the rows come
# only once every lock is held — read from the statement's snapshot, as
# matching_queries.LOCK_MATCH_KEY_AND_RULES reads them for a single submission: rules and
# profiles have their own writers' locks, not the match keys'.
OPEN_GROUP = """
WITH locked AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock($1::int, k)) AS n FROM unnest($2::int[]) AS k
)
SELECT 'locked' AS kind, to_jsonb(n) AS row FROM locked
UNION ALL
SELECT 'rules', to_jsonb(r) FROM locked, (
    SELECT product, version, body, actor, recorded_at FROM rules
    WHERE product = ANY($3::text[]) AND latest
) AS r
UNION ALL
SELECT 'profile', to_jsonb(p) FROM locked, (
    SELECT name, version, retired, participant_a, participant_b, product, body, actor,
           recorded_at
    FROM profiles
    WHERE latest AND NOT retired
      AND (participant_a = ANY($4::text[]) OR participant_b = ANY($4::text[]))
) AS p
"""

# The latest rules of several products at once.
SELECT_LATEST_RULES_MANY = """
SELECT product, version, body, actor, recorded_at FROM rules
WHERE product = ANY($1::text[]) AND latest
"""

# The pairs an operator broke between any two of some participants ($1): a batch's
# matching stays within the pairs of its participant and the counterparties it names.
SELECT_BROKEN_AMONG = """
SELECT participant_a, trade_id_a, participant_b, trade_id_b FROM broken_pairs
WHERE participant_a = ANY($1::text[]) AND participant_b = ANY($1::text[])
"""

# --- windows of a segment, for the batch's book (kevin.store.batch_book) ---------------
#
# The resting trades of one segment (product, currency, participant, counterparty, side,
# trade date) from a price outwards: the first ``size`` by price and every one priced
# like the last of them, so the window is complete up to its edge (the last price; NULL
# when fewer than ``size`` were there: complete to the end of the segment). Served by
# ix_trades_resting from the price on. ``inclusive``: whether the window starts at
# ``from_price`` itself or just past it. Two statements: the edges of many windows, then
# the trades of all of them at once (the caller merges overlapping windows into disjoint
# ranges first, so each trade comes once).

_SEGMENT = (("product", "text"), ("currency", "text"), ("participant", "text"),
            ("counterparty", "text"), ("side", "text"), ("trade_date", "date"))


# The trade date is tested as ``(...) IS TRUE``, which no index serves: a window must be
# a walk of ix_trades_resting from its price, and on a table without statistics yet the
# planner would rather walk ix_trades_trade_date (the participant's whole day, every
# version) and sort it, for every window.
def _resting(alias: str, line: str) -> str:
    return f"""{alias}.latest AND {alias}.status IN ('unmatched', 'mismatched')
        AND {alias}.product = {line}.product AND {alias}.currency = {line}.currency
        AND {alias}.participant = {line}.participant
        AND {alias}.counterparty = {line}.counterparty
        AND {alias}.side = {line}.side
        AND ({alias}.trade_date = {line}.trade_date) IS TRUE"""


EDGE_LINE = (*_SEGMENT, ("from_price", "numeric"), ("inclusive", "bool"), ("above", "bool"),
              ("size", "int"))
WINDOW_EDGES = f"""
SELECT w.ord AS line_ord, CASE WHEN w.above THEN (
    SELECT s.price FROM trades s
    WHERE {_resting("s", "w")}
      AND s.price >= w.from_price AND (s.price > w.from_price OR w.inclusive)
    ORDER BY s.price ASC OFFSET w.size - 1 LIMIT 1
) ELSE (
    SELECT s.price FROM trades s
    WHERE {_resting("s", "w")}
      AND s.price <= w.from_price AND (s.price < w.from_price OR w.inclusive)
    ORDER BY s.price DESC OFFSET w.size - 1 LIMIT 1
) END AS edge
FROM {lines_source(EDGE_LINE)} AS w
"""

# A few windows (a group commit's) in ONE statement: each window's own trades, the first
# ``size`` by price and every one priced like the last of them (WITH TIES), tagged with
# its line. The caller takes each edge from them (the last price, when ``size`` came),
# and a trade two windows share comes twice: for a few windows of a few rows, cheaper
# than a second round trip. The same walk of ix_trades_resting as WINDOW_EDGES.
WINDOWS_WHOLE = f"""
SELECT w.ord AS line_ord, t.*
FROM {lines_source(EDGE_LINE)} AS w
CROSS JOIN LATERAL (
    SELECT {TRADE_COLUMNS} FROM trades s
    WHERE {_resting("s", "w")}
      AND s.price >= w.from_price AND (s.price > w.from_price OR w.inclusive)
    ORDER BY s.price ASC FETCH FIRST w.size ROWS WITH TIES
) AS t
WHERE w.above
UNION ALL
SELECT w.ord AS line_ord, t.*
FROM {lines_source(EDGE_LINE)} AS w
CROSS JOIN LATERAL (
    SELECT {TRADE_COLUMNS} FROM trades s
    WHERE {_resting("s", "w")}
      AND s.price <= w.from_price AND (s.price < w.from_price OR w.inclusive)
    ORDER BY s.price DESC FETCH FIRST w.size ROWS WITH TIES
) AS t
WHERE NOT w.above
"""

# The resting trades of each (segment, low, high), a closed price range (NULL: unbounded).
RANGE_LINE = (*_SEGMENT, ("low", "numeric"), ("high", "numeric"))
# Each range is its own walk of ix_trades_resting: OFFSET 0 keeps the LATERAL subquery
# from being flattened into a join, which the planner (guessing 100 lines) would hash,
# comparing every line with every trade of the segment.
WINDOW_TRADES = f"""
SELECT t.*
FROM {lines_source(RANGE_LINE)} AS w
CROSS JOIN LATERAL (
    SELECT {TRADE_COLUMNS} FROM trades t
    WHERE {_resting("t", "w")}
      AND t.price BETWEEN coalesce(w.low, '-Infinity'::numeric)
                      AND coalesce(w.high, 'Infinity'::numeric)
    OFFSET 0
) AS t
"""

# How many resting trades each (segment, low, high) holds, counted up to ``cap`` only
# (a walk of ix_trades_resting that stops there): whether a range is worth reading whole.
COUNT_LINE = (*_SEGMENT, ("low", "numeric"), ("high", "numeric"), ("cap", "int"))
COUNT_RESTING = f"""
SELECT w.ord AS line_ord, (
    SELECT count(*) FROM (
        SELECT 1 FROM trades t
        WHERE {_resting("t", "w")} AND t.price BETWEEN w.low AND w.high
        LIMIT w.cap
    ) AS capped
) AS resting
FROM {lines_source(COUNT_LINE)} AS w
"""
