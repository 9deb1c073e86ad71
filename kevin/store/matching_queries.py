"""Every SQL statement of matching, rules, alleged trades and operator overrides, named.

Parameters are always bound; column lists are constants. The candidate search names its
parameters (kevin.store.named) and is rendered for one trade and for many.
"""

from kevin.store.named import NamedStatement, lines_source
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
#
# The candidate search is written once, with named parameters (kevin.store.named): the
# statement of a live submission (CANDIDATES, its values bound by name from
# kevin.store.matching.candidate_values) and the one run for many trades at once
# (CANDIDATES_MANY, one line per trade) are both rendered from CANDIDATE_SEARCH.

# Who the search is for and where it looks: the resting side of the trade's segment.
_KEY_PARAMS = (
    ("product", "text"), ("currency", "text"), ("resting_participant", "text"),
    ("participant", "text"), ("resting_side", "text"), ("trade_date", "date"),
    ("trade_id", "text"), ("price", "numeric"), ("quantity", "numeric"),
)
# What "within tolerance" means for this trade (kevin.domain.rules bounds).
def _form_params(field: str) -> tuple[tuple[str, str], ...]:
    """An amount field's window and tolerance form (kevin.domain.tolerances)."""
    return ((f"{field}_low", "numeric"), (f"{field}_high", "numeric"),
            (f"{field}_form", "text"), (f"{field}_amount", "numeric"),
            (f"{field}_cap", "numeric"), (f"{field}_below", "numeric"),
            (f"{field}_above", "numeric"))


_WITHIN_PARAMS = (
    *_form_params("price"), *_form_params("quantity"),
    ("settlement_low", "date"), ("settlement_high", "date"), ("any_location", "bool"),
    ("location", "text"), ("location_set", "jsonb"), ("first_submitted_at", "timestamptz"),
)

_RESTING_OF_KEY = """
    latest AND status IN ('unmatched', 'mismatched')
    AND product = {product} AND currency = {currency}
    AND participant = {resting_participant} AND counterparty = {participant}
    AND side = {resting_side} AND trade_date = {trade_date}
"""

# A pair an operator broke is never paired again automatically. broken_pairs stores each
# pair once, lower (participant, trade_id) first; both orders are primary-key lookups.
_NOT_BROKEN = """
    NOT EXISTS (
        SELECT 1 FROM broken_pairs bp
        WHERE (bp.participant_a = {participant} AND bp.trade_id_a = {trade_id}
               AND bp.participant_b = trades.participant AND bp.trade_id_b = trades.trade_id)
           OR (bp.participant_a = trades.participant AND bp.trade_id_a = trades.trade_id
               AND bp.participant_b = {participant} AND bp.trade_id_b = {trade_id})
    )
"""

# Within tolerance on every field, as kevin.domain.tolerances decides it, for every
# tolerance form. An amount field: the index range [low, high] (the form's window, a
# superset for relative forms; NULL: unbounded, hence -/+Infinity), then the form's exact
# inclusive test. Both bounds are written so that they bound the index scan in a generic
# plan too, where their values are unknown (as ``(high IS NULL OR price <= high)`` a
# bound could only filter after the scan, the generic plan would look dear and every
# execution be planned anew). Relative and asymmetric forms are seen from the resting
# trade, the one of the pair that entered the book first ("C" collation = Python's str
# order); relative forms are multiplied out (|ours - resting| * 10^4 <= resting * bps):
# no division rounds. Settlement date: the exact window (business days included);
# location: equal, or in our equivalence set (a jsonb array), or ignored.
_RESTING_IS_THEIRS = """(first_submitted_at, participant COLLATE "C", trade_id COLLATE "C")
              < ({first_submitted_at}, {participant} COLLATE "C", {trade_id} COLLATE "C")"""


def _form_test(field: str) -> str:
    """The window and the exact test of one amount field's tolerance form."""
    ours = "{" + field + "}"
    form, amount, cap, below, above = ("{" + f"{field}_{p}" + "}"
                                       for p in ("form", "amount", "cap", "below", "above"))
    resting = f"(CASE WHEN {_RESTING_IS_THEIRS} THEN {field} ELSE {ours} END)"
    other = f"(CASE WHEN {_RESTING_IS_THEIRS} THEN {ours} ELSE {field} END)"
    gap = f"abs({field} - {ours})"
    return f"""
    AND {field} >= coalesce({{{field}_low}}, '-Infinity'::numeric)
    AND {field} <= coalesce({{{field}_high}}, 'Infinity'::numeric)
    AND (CASE {form}
         WHEN 'ignore' THEN true
         WHEN 'exact' THEN {field} = {ours}
         WHEN 'abs' THEN {gap} <= {amount}
         WHEN 'bps' THEN {gap} * 10000 <= {resting} * {amount}
                         AND {gap} <= coalesce({cap}, {gap})
         WHEN 'pct' THEN {gap} * 100 <= {resting} * {amount}
                         AND {gap} <= coalesce({cap}, {gap})
         WHEN 'range' THEN {other} - {resting} BETWEEN -{below} AND {above}
    END)"""


_WITHIN = f"""{_form_test("price")}{_form_test("quantity")}
    AND settlement_date BETWEEN {{settlement_low}} AND {{settlement_high}}
    AND ({{any_location}} OR location IS NOT DISTINCT FROM {{location}}
         OR coalesce({{location_set}} ? location, false))
"""

# How many nearest counterparts per side a mismatch list names. A constant in the SQL, not
# a parameter: a generic plan must know it (LIMIT $n is costed as a tenth of the rows, so
# on a deep book the generic plan would look dear and every execution be planned anew).
NEAREST_PER_SIDE = 3

# Invariant 7's order, "smallest price difference" first, cannot be read off a btree
# directly, but per side of our price it can: above (price >= ours) ascending and below
# descending are both walks of ix_trades_resting from our price outwards. The global
# best is the better of the two sides' bests, so each side stops after ``limit`` rows
# (plus ties on price, which incremental sort settles by quantity difference, first
# submission and trade_id). Cost depends on the rows near our price, not the book size.
def _nearest_each_side(within: str, limit: int) -> str:
    columns = TRADE_COLUMNS.replace("{", "{{").replace("}", "}}")
    return f"""
(SELECT {columns} FROM trades
 WHERE {_RESTING_OF_KEY} AND price >= {{price}} {within} AND {_NOT_BROKEN}
 ORDER BY price ASC, abs(quantity - {{quantity}}), first_submitted_at, trade_id COLLATE "C"
 LIMIT {limit})
UNION ALL
(SELECT {columns} FROM trades
 WHERE {_RESTING_OF_KEY} AND price < {{price}} {within} AND {_NOT_BROKEN}
 ORDER BY price DESC, abs(quantity - {{quantity}}), first_submitted_at, trade_id COLLATE "C"
 LIMIT {limit})
"""


# The best candidate within tolerance on each side of our price.
MATCH_SEARCH = NamedStatement(_nearest_each_side(_WITHIN, 1), _KEY_PARAMS + _WITHIN_PARAMS)
# The nearest counterparts on each side regardless of tolerance, for the mismatch list.
NEAREST_SEARCH = NamedStatement(_nearest_each_side("", NEAREST_PER_SIDE), _KEY_PARAMS)

# MATCH_SEARCH and, only when it finds nothing, NEAREST_SEARCH in one round trip — most
# new trades find nothing to match and would otherwise pay two. The NOT EXISTS over the
# materialised within-tolerance rows is uncorrelated, so the planner makes it a one-time
# filter: the nearest walk runs only when nothing matched.
CANDIDATE_SEARCH = NamedStatement(f"""
WITH within AS MATERIALIZED ({MATCH_SEARCH.text})
SELECT * FROM within
UNION ALL
SELECT * FROM ({NEAREST_SEARCH.text}) AS nearest
WHERE NOT EXISTS (SELECT 1 FROM within)
""", MATCH_SEARCH.params)

CANDIDATES = CANDIDATE_SEARCH.one()
MATCH_CANDIDATES = MATCH_SEARCH.one()
NEAREST_CANDIDATES = NEAREST_SEARCH.one()
# The search for many trades at once: each line's candidates, tagged with its position.
CANDIDATES_MANY = CANDIDATE_SEARCH.many("line.ord AS line_ord, found.*")

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

# NAMING for several trades at once ($1: one line per trade, kevin.store.named
# .lines_source — a batch asks for ten thousand, and asyncpg encoded three text arrays
# of them element by element) — e.g. both legs of a new match in one round trip.
# LATERAL runs NAMING's index-driven lookup once per line; rows come back per line in
# the order given, then by (participant, trade_id), as separate calls would return them.
NAMING_TARGETS = (("participant", "text"), ("counterparty", "text"), ("trade_id", "text"))
NAMING_ANY = f"""
SELECT pointing.* FROM {lines_source(NAMING_TARGETS)} AS target
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

# A submission's first statement: LOCK_MATCH_KEY ($1, $2), the latest rules of the
# product ($3) and the pair's profile ($4 < $5) for it (or for "*": precedence, most
# specific first; ix_profiles_one_claim), and what the new trade's version 1 needs —
# when it is first submitted (the database's clock, read after the lock is granted: the
# target list is evaluated in order) and whether its trade_id ($6, $7) is taken
# already (one probe of pk_trades, as bulk_queries.FIRST_SUBMISSIONS) — in one round
# trip. Nothing is written: version 1 goes in with the versions its matching derives
# (kevin.store.book, PostgresBook.write_first), so the transaction takes an xid only
# there and holds back no other writer's feed rows (kevin.feed.sequencer) while it
# matches (docs/performance.md, change 55). Rules, profile and trade_id are read with
# the statement's snapshot, possibly before the lock is granted. For the rules and the
# profile that is as good as after it, since their writers take locks of their own
# (RULES_LOCK_CLASS, the profile's name), not the match key's: a rules change racing a
# submission lands before or after it either way. A trade_id another writer creates
# after that snapshot makes the write of version 1 fail on the trade's key (the write
# waits for that writer to commit), and the submission is done again, finding it
# taken. One row always; rules columns NULL when the product has none.
# It also keeps the rest of the submission's transaction on generic plans (set_config,
# transaction-local): on a deep book PostgreSQL judges the candidate search's generic
# plan dearer than a custom one and would plan that UNION anew for every submission, at
# several times the cost of running the generic plan; and at any depth it would do the
# same for the append of a match's versions and the mismatch-list check (a generic plan
# guesses 10 rows from an unnest of array parameters, a custom one counts 2). The story
# and figures: docs/performance.md, changes 16 and 19. A submission's statements are key
# lookups and index-bounded scans whose generic plans are sound (tests/test_plans.py); a
# replay, whose large appends want plans for their size, never runs this statement.
LOCK_MATCH_KEY_AND_RULES = """
SELECT pg_advisory_xact_lock($1::int, $2::int) AS locked,
       set_config('plan_cache_mode', 'force_generic_plan', true) AS plans,
       r.product, r.version, r.body, r.actor, r.recorded_at,
       to_jsonb(p) AS profile,
       clock_timestamp() AS first_submitted_at,
       (SELECT true FROM trades t WHERE t.participant = $6 AND t.trade_id = $7
        LIMIT 1) IS NOT NULL AS taken
FROM (VALUES (1)) AS one (x)
LEFT JOIN rules r ON r.product = $3 AND r.latest
LEFT JOIN LATERAL (
    SELECT name, version, retired, participant_a, participant_b, product, body, actor,
           recorded_at
    FROM profiles
    WHERE latest AND NOT retired AND participant_a = $4 AND participant_b = $5
      AND product IN ($3, '*')
    ORDER BY product = '*'
    LIMIT 1
) AS p ON true
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
