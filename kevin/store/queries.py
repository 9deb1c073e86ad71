"""Every SQL statement the trade store runs, named, in one place.

Parameters are always bound ($1, $2, …); no value is ever formatted into SQL text.
"""

TRADE_COLUMNS = """
    participant, trade_id, version, latest, status, reason, counterparty, side, product,
    quantity, price, currency, trade_date, settlement_date, location, attributes,
    match_id, match_counterparty_trade_id, match_counterparty_version, mismatches,
    rules_version, comment, replay_id, actor, first_submitted_at, recorded_at
"""

# A version's columns as the statements that write versions take them, in order (every
# column but ``latest``, which each statement states itself, and ``recorded_at``).
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

# A version and its feed update in one statement: one round trip, and invariant 5 (every
# version has exactly one feed row, in its own transaction) holds by construction.
# ON CONFLICT DO NOTHING on the primary key makes a concurrent duplicate a clean no-op
# that the caller detects (no row returned) instead of a driver exception.
INSERT_VERSION = f"""
WITH version AS (
    INSERT INTO trades (
        participant, trade_id, version, latest, status, reason, counterparty, side,
        product, quantity, price, currency, trade_date, settlement_date, location,
        attributes, match_id, match_counterparty_trade_id, match_counterparty_version,
        mismatches, rules_version, comment, replay_id, actor, first_submitted_at
    ) VALUES (
        $1, $2, $3, true, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
        $18, $19, $20, $21, $22, $23, coalesce($24, clock_timestamp())
    )
    ON CONFLICT ON CONSTRAINT pk_trades DO NOTHING
    RETURNING {TRADE_COLUMNS}
), update AS (
    INSERT INTO feed (participant, trade_id, version)
    SELECT participant, trade_id, version FROM version
)
SELECT {TRADE_COLUMNS} FROM version
"""

# Version n+1 of one or more trades, each written only against its version n (invariant
# 3), with their feed rows: flips, inserts and feed rows in ONE statement, one round trip
# however many trades a decision touches (both legs of a match, a batch's matches).
# * flipped: the UPDATE re-checks `latest` on every derived-from row; a row that another
#   transaction flipped first (the UPDATE waits for it to commit) is not returned, and
#   that trade gets no new version. The caller compares counts and raises
#   VersionConflict; the rollback undoes the flips that did happen.
# * The partial unique index (one latest row per trade) treats the flipped row as
#   deleted by this statement, so version n+1 can be inserted as latest in the same one.
# * jsonb travels as text (attributes, mismatches): asyncpg would read a Python list
#   inside an array parameter as another array dimension.
APPEND_VERSIONS = f"""
WITH new AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::numeric[], $10::numeric[], $11::text[], $12::date[], $13::date[],
        $14::text[], $15::text[], $16::uuid[], $17::text[], $18::int[], $19::text[],
        $20::int[], $21::text[], $22::uuid[], $23::text[], $24::timestamptz[]
    ) WITH ORDINALITY AS n(
        participant, trade_id, version, status, reason, counterparty, side, product,
        quantity, price, currency, trade_date, settlement_date, location, attributes,
        match_id, match_counterparty_trade_id, match_counterparty_version, mismatches,
        rules_version, comment, replay_id, actor, first_submitted_at, ord)
), flipped AS (
    UPDATE trades SET latest = false
    FROM new
    WHERE trades.participant = new.participant AND trades.trade_id = new.trade_id
      AND trades.version = new.version - 1 AND trades.latest
    RETURNING trades.participant, trades.trade_id
), version AS (
    INSERT INTO trades (
        participant, trade_id, version, latest, status, reason, counterparty, side,
        product, quantity, price, currency, trade_date, settlement_date, location,
        attributes, match_id, match_counterparty_trade_id, match_counterparty_version,
        mismatches, rules_version, comment, replay_id, actor, first_submitted_at
    )
    SELECT new.participant, new.trade_id, new.version, true, new.status, new.reason,
           new.counterparty, new.side, new.product, new.quantity, new.price, new.currency,
           new.trade_date, new.settlement_date, new.location, new.attributes::jsonb,
           new.match_id, new.match_counterparty_trade_id, new.match_counterparty_version,
           new.mismatches::jsonb, new.rules_version, new.comment, new.replay_id, new.actor,
           coalesce(new.first_submitted_at, clock_timestamp())
    FROM new JOIN flipped USING (participant, trade_id)
    ORDER BY new.ord
    ON CONFLICT ON CONSTRAINT pk_trades DO NOTHING
    RETURNING {TRADE_COLUMNS}
), update AS (
    INSERT INTO feed (participant, trade_id, version)
    SELECT participant, trade_id, version FROM version
)
SELECT {TRADE_COLUMNS} FROM version
"""

SELECT_LATEST = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE participant = $1 AND trade_id = $2 AND latest
"""

# The participants (among $2; NULL: every one) that have a trade of id $1, by name: a
# probe of pk_trades a participant, which are few, where trade_id alone has no index.
SELECT_HOLDERS = """
SELECT p.name FROM participants p
WHERE ($2::text IS NULL OR p.name = $2)
  AND EXISTS (SELECT 1 FROM trades t
              WHERE t.participant = p.name AND t.trade_id = $1 AND t.latest)
ORDER BY p.name
"""

# History reads (as-of, versions) go through the trade_history view: trades UNION ALL
# trades_archive (alembic 0002), so archived versions stay visible. A version moves between
# the two in one transaction, so one statement's snapshot sees it exactly once. Latest
# reads stay on trades alone: a latest version is never archived.
# The last version recorded by $3, taken from each table apart and the higher kept.
# Per trade recorded_at grows with the version, so each branch may use its best index:
# hot, a backward walk of the primary key from the newest version (a trade keeps few
# versions hot); archived, one probe of ix_trades_archive_as_of however long the history.
# (Through the trade_history view the planner would have to pick one order for both.)
SELECT_AS_OF = f"""
SELECT {TRADE_COLUMNS} FROM (
    (SELECT {TRADE_COLUMNS} FROM trades
     WHERE participant = $1 AND trade_id = $2 AND recorded_at <= $3
     ORDER BY version DESC
     LIMIT 1)
    UNION ALL
    (SELECT {TRADE_COLUMNS} FROM trades_archive
     WHERE participant = $1 AND trade_id = $2 AND recorded_at <= $3
     ORDER BY recorded_at DESC, version DESC
     LIMIT 1)
) AS candidates
ORDER BY version DESC
LIMIT 1
"""

SELECT_VERSIONS = f"""
SELECT {TRADE_COLUMNS} FROM trade_history
WHERE participant = $1 AND trade_id = $2
ORDER BY version
"""

# Keyset pagination on (participant, trade_id); $1 NULL means every participant (admin).
SELECT_LATEST_PAGE = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest
  AND ($1::text IS NULL OR participant = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR product = $3)
  AND (participant, trade_id) > ($4, $5)
ORDER BY participant, trade_id
LIMIT $6
"""

# As of an instant: per trade, the highest version recorded by then. recorded_at grows
# with the version (clock_timestamp() at insert), so "highest version" is "latest then".
SELECT_AS_OF_PAGE = f"""
SELECT {TRADE_COLUMNS} FROM (
    SELECT DISTINCT ON (participant, trade_id) {TRADE_COLUMNS} FROM trade_history
    WHERE ($1::text IS NULL OR participant = $1)
      AND recorded_at <= $7
      AND (participant, trade_id) > ($4, $5)
    ORDER BY participant, trade_id, version DESC
) AS as_of_then
WHERE ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR product = $3)
ORDER BY participant, trade_id
LIMIT $6
"""

INSERT_PARTICIPANT = """
INSERT INTO participants (name) VALUES ($1)
ON CONFLICT (name) DO NOTHING
RETURNING name
"""

INSERT_API_KEY = """
INSERT INTO api_keys (key_hash, participant, label) VALUES ($1, $2, $3)
RETURNING key_hash, created_at, revoked_at, last_used_at, label
"""

# The participant owning a valid key ($1: its hash), noting that the key was used — at
# most once a minute: a key checked again within the minute writes nothing (and the
# statement takes no transaction id). The SELECT reads the statement's snapshot, taken
# before the UPDATE, whatever it did.
SELECT_KEY_PARTICIPANT = """
WITH used AS (
    UPDATE api_keys SET last_used_at = clock_timestamp()
    WHERE key_hash = $1 AND revoked_at IS NULL
      AND (last_used_at IS NULL OR last_used_at < clock_timestamp() - interval '1 minute')
    RETURNING 1
)
SELECT participant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL
"""

SELECT_PARTICIPANTS = "SELECT name, bic, created_at FROM participants ORDER BY name"

# Every participant's keys, revoked ones too, each's oldest first.
SELECT_ALL_API_KEYS = """
SELECT participant, key_hash, created_at, revoked_at, last_used_at, label FROM api_keys
ORDER BY participant, created_at, key_hash
"""

# A participant's keys, revoked ones too, oldest first.
SELECT_API_KEYS = """
SELECT key_hash, created_at, revoked_at, last_used_at, label FROM api_keys
WHERE participant = $1
ORDER BY created_at, key_hash
"""

# Revoke the participant's key whose hash begins with $2 (its key id): once, the first
# revocation's instant kept by a second one.
REVOKE_API_KEY = """
UPDATE api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp())
WHERE participant = $1 AND substring(key_hash FROM 1 FOR 8) = $2::bytea
RETURNING key_hash, created_at, revoked_at, last_used_at, label
"""

# A key's revocation told to every Kevin process (kevin.domain.keys.KEY_REVOKED_CHANNEL,
# $1; the key's id, $2): sent by the revoking transaction, delivered at its commit.
NOTIFY_KEY_REVOKED = "SELECT pg_notify($1, $2)"

SELECT_PARTICIPANT = "SELECT name FROM participants WHERE name = $1"

# The participant's row is the lock: a BIC taken by another participant fails on the
# unique constraint (uq_participants_bic), mapped to a conflict by the caller.
UPDATE_PARTICIPANT_BIC = "UPDATE participants SET bic = $2 WHERE name = $1 RETURNING name"

SELECT_PARTICIPANT_BIC = "SELECT bic FROM participants WHERE name = $1"

SELECT_PARTICIPANTS_BY_BIC = "SELECT bic, name FROM participants WHERE bic = ANY($1::text[])"
