"""Every SQL statement of matching, rules, alleged trades and operator overrides, named.

Parameters are always bound ($1, $2, …); column lists are constants.
"""

from kevin.store.queries import TRADE_COLUMNS

# --- serialising matching per match key ------------------------------------------------

# Two opposite trades submitted at once in separate transactions cannot see each other
# (neither has committed), so both would rest: a missed match. Every transaction that
# changes the matching state of a match key (product, currency, the two participants)
# first takes this transaction-scoped lock on the key's hash. The lock lives in the
# database, so it serialises several `kevin serve` processes too; under READ COMMITTED
# the statements after it see everything the previous holder committed. Keys are locked
# in ascending hash order, so two transactions needing two keys cannot deadlock; a hash
# collision only serialises two unrelated keys. The two-int form keeps these locks apart
# from any single-bigint advisory lock elsewhere.
LOCK_MATCH_KEY = "SELECT pg_advisory_xact_lock($1::int, $2::int)"

# --- candidates ------------------------------------------------------------------------

_RESTING_OF_KEY = """
    latest AND status IN ('unmatched', 'mismatched')
    AND product = $1 AND currency = $2 AND participant = $3 AND counterparty = $4
    AND side = $5 AND trade_date = $6
"""

# A pair an operator broke is never paired again automatically. broken_pairs stores each
# pair once, lower (participant, trade_id) first; both orders are primary-key lookups.
_NOT_BROKEN = """
    NOT EXISTS (
        SELECT 1 FROM broken_pairs bp
        WHERE (bp.participant_a = $7 AND bp.trade_id_a = $8
               AND bp.participant_b = trades.participant AND bp.trade_id_b = trades.trade_id)
           OR (bp.participant_a = trades.participant AND bp.trade_id_a = trades.trade_id
               AND bp.participant_b = $7 AND bp.trade_id_b = $8)
    )
"""

# Within tolerance on every field, as kevin.domain.tolerances decides it, for every
# tolerance form. Price: the index range [$12, $13] (the form's window, kevin.domain
# .tolerances bounds: a superset for relative forms; NULL: unbounded, hence -/+Infinity),
# then the form's exact inclusive test. Both bounds are written so that they bound the
# index scan in a generic plan too, where their values are unknown: as ``($13 IS NULL OR
# price <= $13)`` a bound could only filter after the scan, the generic plan looked
# costly, and PostgreSQL re-planned this statement on every execution once the tables had
# statistics (a planning of the whole UNION each time). Relative and asymmetric forms are
# seen from the resting trade, the one of the pair that entered the book first ($31 =
# our first_submitted_at; "C" collation = Python's str order); relative forms are
# multiplied out (|ours - resting| * 10^4 <= resting * bps): no division rounds.
# Quantity: the same with $19..$25; settlement date: the exact window [$26, $27] (the
# business-day window is exact too); location: equal, or in our equivalence set ($30, a
# jsonb array), or ignored ($28).
_RESTING_IS_THEIRS = """(first_submitted_at, participant COLLATE "C", trade_id COLLATE "C")
              < ($31, $7 COLLATE "C", $8 COLLATE "C")"""


def _form_test(column: str, ours: str, first: int) -> str:
    """The exact test of one amount field's form: $first is the form's name, then its
    amount, max_abs cap, range below and range above."""
    form, amount, cap, below, above = (f"${first + i}" for i in range(5))
    resting = f"(CASE WHEN {_RESTING_IS_THEIRS} THEN {column} ELSE {ours} END)"
    other = f"(CASE WHEN {_RESTING_IS_THEIRS} THEN {ours} ELSE {column} END)"
    gap = f"abs({column} - {ours})"
    return f"""(CASE {form}::text
         WHEN 'ignore' THEN true
         WHEN 'exact' THEN {column} = {ours}
         WHEN 'abs' THEN {gap} <= {amount}::numeric
         WHEN 'bps' THEN {gap} * 10000 <= {resting} * {amount}::numeric
                         AND {gap} <= coalesce({cap}::numeric, {gap})
         WHEN 'pct' THEN {gap} * 100 <= {resting} * {amount}::numeric
                         AND {gap} <= coalesce({cap}::numeric, {gap})
         WHEN 'range' THEN {other} - {resting}
                           BETWEEN -{below}::numeric AND {above}::numeric
    END)"""


_WITHIN = f"""
    AND price >= coalesce($12::numeric, '-Infinity'::numeric)
    AND price <= coalesce($13::numeric, 'Infinity'::numeric)
    AND {_form_test("price", "$9", 14)}
    AND quantity >= coalesce($19::numeric, '-Infinity'::numeric)
    AND quantity <= coalesce($20::numeric, 'Infinity'::numeric)
    AND {_form_test("quantity", "$10", 21)}
    AND settlement_date BETWEEN $26 AND $27
    AND ($28 OR location IS NOT DISTINCT FROM $29
         OR coalesce($30::jsonb ? location, false))
"""

# Invariant 7's order, "smallest price difference" first, cannot be read off a btree
# directly, but per side of our price it can: above (price >= ours) ascending and below
# descending are both walks of ix_trades_resting from our price outwards. The global
# best is the better of the two sides' bests, so each side stops after $11 rows (plus
# ties on price, which incremental sort settles by quantity difference, first
# submission and trade_id). Cost depends on the rows near our price, not the book size.
_NEAREST_EACH_SIDE = f"""
(SELECT {TRADE_COLUMNS} FROM trades
 WHERE {_RESTING_OF_KEY} AND price >= $9 {{within}} AND {_NOT_BROKEN}
 ORDER BY price ASC, abs(quantity - $10), first_submitted_at, trade_id COLLATE "C"
 LIMIT $11)
UNION ALL
(SELECT {TRADE_COLUMNS} FROM trades
 WHERE {_RESTING_OF_KEY} AND price < $9 {{within}} AND {_NOT_BROKEN}
 ORDER BY price DESC, abs(quantity - $10), first_submitted_at, trade_id COLLATE "C"
 LIMIT $11)
"""

# The best candidate within tolerance on each side of our price (LIMIT 1 each).
MATCH_CANDIDATES = _NEAREST_EACH_SIDE.format(within=_WITHIN)

# Only when nothing is within tolerance: the nearest counterparts on each side regardless
# of tolerance, for the mismatch list ($1..$11 as above).
NEAREST_CANDIDATES = _NEAREST_EACH_SIDE.format(within="")

# How many nearest counterparts per side a mismatch list names. A constant in the SQL, not
# a parameter: a generic plan must know it (LIMIT $n is costed as a tenth of the rows, so
# on a deep book the generic plan looked dear and every execution was planned anew).
NEAREST_PER_SIDE = 3

# MATCH_CANDIDATES and, only when it finds nothing, NEAREST_CANDIDATES (NEAREST_PER_SIDE
# rows per side) in one round trip — most new trades find nothing to match and would
# otherwise pay two.
# The NOT EXISTS over the materialised within-tolerance rows is uncorrelated, so the
# planner makes it a one-time filter: the nearest walk runs only when nothing matched.
_NEAREST_FOR_THE_LIST = NEAREST_CANDIDATES.replace("LIMIT $11", f"LIMIT {NEAREST_PER_SIDE}")
CANDIDATES = f"""
WITH within AS MATERIALIZED ({MATCH_CANDIDATES})
SELECT * FROM within
UNION ALL
SELECT * FROM ({_NEAREST_FOR_THE_LIST}) AS nearest
WHERE NOT EXISTS (SELECT 1 FROM within)
"""

# Live mismatched trades whose mismatch list names a trade (participant $2's $3): they
# must be re-evaluated when it matches elsewhere, is amended or cancelled. Served by the
# GIN index ix_trades_mismatch_targets (jsonb_path_ops supports @>), so its cost does
# not grow with the number of resting trades.
NAMING = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND status = 'mismatched'
  AND participant = $1 AND counterparty = $2
  AND mismatches @> jsonb_build_array(jsonb_build_object('counterparty_trade_id', $3::text))
ORDER BY participant, trade_id
"""

# NAMING for several trades at once ($1, $2, $3: arrays of participant, counterparty
# and trade_id, one entry per trade) — e.g. both legs of a new match in one round trip.
# LATERAL runs NAMING's index-driven lookup once per entry; rows come back per entry
# in the order given, then by (participant, trade_id), as separate calls would return them.
NAMING_ANY = f"""
SELECT pointing.* FROM
    unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
        AS target(participant, counterparty, trade_id, ord)
CROSS JOIN LATERAL (
    SELECT {TRADE_COLUMNS} FROM trades
    WHERE latest AND status = 'mismatched'
      AND participant = target.participant AND counterparty = target.counterparty
      AND mismatches @> jsonb_build_array(
          jsonb_build_object('counterparty_trade_id', target.trade_id))
) AS pointing
ORDER BY target.ord, pointing.participant, pointing.trade_id
"""

# --- rules -----------------------------------------------------------------------------

SELECT_LATEST_RULES = """
SELECT product, version, body, actor, recorded_at FROM rules
WHERE product = $1 AND latest
"""

# A submission's first statement: LOCK_MATCH_KEY ($1, $2) and the latest rules of the
# product ($3) in one round trip. The rules row is read with the statement's snapshot,
# possibly before the lock is granted; that is as good as after it, since rules writers
# take a lock of their own (RULES_LOCK_CLASS), not the match key's: a rules change racing
# a submission lands before or after it either way. One row always; rules columns NULL
# when the product has none.
# It also keeps the rest of the submission's transaction on generic plans (set_config,
# transaction-local): on a deep book PostgreSQL again judged the candidate search's generic
# plan dearer than a custom one, and planned that UNION anew for every submission (3-4 ms
# of a 9 ms submission with 1,000,000 resting, against 0.9 ms for running the generic
# plan; README, Performance, change 19), and, at any depth, the append of a match's
# versions and the mismatch-list check (a generic plan guesses 10 rows from an unnest of
# array parameters, a custom one counts 2; change 16). A submission's statements are key
# lookups and index-bounded scans whose generic plans are sound (tests/test_plans.py); a
# replay, whose large appends want plans for their size, never runs this statement.
LOCK_MATCH_KEY_AND_RULES = """
SELECT pg_advisory_xact_lock($1::int, $2::int) AS locked,
       set_config('plan_cache_mode', 'force_generic_plan', true) AS plans,
       r.product, r.version, r.body, r.actor, r.recorded_at
FROM (VALUES (1)) AS one (x)
LEFT JOIN rules r ON r.product = $3 AND r.latest
"""

SELECT_RULES_AS_OF = """
SELECT product, version, body, actor, recorded_at FROM rules
WHERE product = $1 AND recorded_at <= $2
ORDER BY version DESC
LIMIT 1
"""

# Rules are append-only like trades. Writers of one product are serialised by an advisory
# lock on the product (LOCK_MATCH_KEY's class space, see RULES_LOCK_CLASS), so the flip
# and the insert of version n+1 never race; the partial unique index ix_rules_one_latest
# would refuse a second latest row anyway.
FLIP_LATEST_RULES = """
UPDATE rules SET latest = false WHERE product = $1 AND latest
RETURNING version
"""

INSERT_RULES = """
INSERT INTO rules (product, version, latest, body, actor)
VALUES ($1, $2, true, $3, $4)
RETURNING product, version, body, actor, recorded_at
"""

# --- operator overrides and alleged ----------------------------------------------------

INSERT_BROKEN_PAIR = """
INSERT INTO broken_pairs (participant_a, trade_id_a, participant_b, trade_id_b, match_id, comment)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT ON CONSTRAINT pk_broken_pairs DO NOTHING
"""

SELECT_BROKEN_WITH = """
SELECT participant_b AS participant, trade_id_b AS trade_id FROM broken_pairs
WHERE participant_a = $1 AND trade_id_a = $2
UNION ALL
SELECT participant_a, trade_id_a FROM broken_pairs
WHERE participant_b = $1 AND trade_id_b = $2
"""

# Served by ix_trades_match_id (latest AND match_id IS NOT NULL).
SELECT_LIVE_MATCH = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND match_id = $1
ORDER BY participant, trade_id
"""

# Trades others submitted naming $1 as counterparty that are live and not matched;
# served by ix_trades_alleged (counterparty, status) WHERE latest. Keyset-paginated.
SELECT_ALLEGED = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND counterparty = $1 AND status IN ('unmatched', 'mismatched')
  AND ($2::text IS NULL OR product = $2)
  AND (participant, trade_id) > ($3, $4)
ORDER BY participant, trade_id
LIMIT $5
"""
