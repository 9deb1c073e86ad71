"""The consumer's own schema and statements, in the CONSUMER's database (not Kevin's).

The consumer library is a client: it never touches Kevin's database, so its SQL lives
with it rather than in kevin.store. Every statement is named here.

Tables (created with CREATE ... IF NOT EXISTS by ``Consumer.setup()``):

``kevin_trade_versions`` — one row per (participant, trade_id, version) received; the
primary key is the idempotency guard: a duplicate delivery is a no-op.
``latest`` marks the version the consumer has applied as current (at most one per trade,
a partial unique index); ``applied`` marks versions played out through the callback.

``kevin_feed_checkpoints`` — per consumer name, the feed seq to resume after; written in
the same transaction as the update it follows, so a crash neither loses nor doubles.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS kevin_trade_versions (
    participant text NOT NULL,
    trade_id text NOT NULL,
    version integer NOT NULL CHECK (version >= 1),
    seq bigint,                 -- the feed position it came with; NULL when backfilled
    event text NOT NULL,        -- why Kevin wrote the version (its reason)
    status text NOT NULL,
    -- The Trade body as Kevin sent it; its attributes are a JSON string of their text
    -- when they hold a number jsonb would rewrite (1e99, -0): kevin.jsoncodec.for_jsonb.
    trade jsonb NOT NULL,
    latest boolean NOT NULL DEFAULT false,
    applied boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (participant, trade_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS kevin_trade_versions_one_latest
    ON kevin_trade_versions (participant, trade_id) WHERE latest;
CREATE TABLE IF NOT EXISTS kevin_feed_checkpoints (
    name text PRIMARY KEY,
    seq bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

SELECT_CHECKPOINT = "SELECT seq FROM kevin_feed_checkpoints WHERE name = $1"

# GREATEST: the position never moves back (a late duplicate of an old seq cannot rewind).
SAVE_CHECKPOINT = """
INSERT INTO kevin_feed_checkpoints (name, seq) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE
SET seq = GREATEST(kevin_feed_checkpoints.seq, EXCLUDED.seq), updated_at = clock_timestamp()
"""

# Serialise appliers of one trade (two consumer processes sharing a table, or a backfill
# racing the feed): the latest flip below must see the other's result.
LOCK_TRADE = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))"

SELECT_LATEST_VERSION = """
SELECT version FROM kevin_trade_versions
WHERE participant = $1 AND trade_id = $2 AND latest
"""

# ON CONFLICT DO NOTHING on the primary key: a duplicate delivery inserts nothing and
# returns no row, which is how the caller knows it was already stored.
INSERT_VERSION = """
INSERT INTO kevin_trade_versions
    (participant, trade_id, version, seq, event, status, trade, latest, applied)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (participant, trade_id, version) DO NOTHING
RETURNING version
"""

CLEAR_LATEST = """
UPDATE kevin_trade_versions SET latest = false
WHERE participant = $1 AND trade_id = $2 AND latest
"""

CLEAR_VERSION_LATEST = """
UPDATE kevin_trade_versions SET latest = false
WHERE participant = $1 AND trade_id = $2 AND version = $3
"""

HOLDS_VERSION = """
SELECT EXISTS (SELECT 1 FROM kevin_trade_versions
               WHERE participant = $1 AND trade_id = $2 AND version = $3)
"""

# contiguous: the next version is applied only if it is exactly one ahead of the latest.
MAKE_LATEST = """
UPDATE kevin_trade_versions SET latest = true, applied = true
WHERE participant = $1 AND trade_id = $2 AND version = $3
RETURNING participant, trade_id, version, seq, event, status, trade
"""

# Gap detection: lead() looks at the next version we hold for the same trade;
# a next_version more than one ahead means versions in between never arrived. The second
# branch looks behind the first row for the edge case where version 1 never arrived.
# Each row is a missing range [missing_from, missing_to]. If any rows come back, we are
# missing updates.
GAPS = """
WITH v AS (
    SELECT participant, trade_id, version,
           lead(version) OVER w AS next_version,
           lag(version) OVER w AS prev_version
    FROM kevin_trade_versions
    WINDOW w AS (PARTITION BY participant, trade_id ORDER BY version)
)
SELECT participant, trade_id, version + 1 AS missing_from, next_version - 1 AS missing_to
FROM v WHERE next_version IS NOT NULL AND next_version > version + 1
UNION ALL
SELECT participant, trade_id, 1, version - 1
FROM v WHERE prev_version IS NULL AND version > 1
ORDER BY participant, trade_id, missing_from
"""

SELECT_LATEST_VERSIONS = """
SELECT trade_id, max(version) AS version FROM kevin_trade_versions
WHERE participant = $1 GROUP BY trade_id
"""

SELECT_PARTICIPANTS = "SELECT DISTINCT participant FROM kevin_trade_versions"
