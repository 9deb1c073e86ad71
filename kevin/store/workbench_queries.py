"""The web workbench's statements: sessions and the exceptions lists.

Parameters are always bound; the column list is a constant.
"""

from kevin.store.queries import TRADE_COLUMNS

# created_at and expires_at from one reading of the clock: the lifetime is exact.
INSERT_SESSION = """
INSERT INTO ui_sessions (session_hash, participant, credential_hash, csrf_token,
                         created_at, expires_at)
SELECT $1, $2, $3, $4, now.at, now.at + $5::interval
FROM (SELECT clock_timestamp() AS at) AS now
RETURNING expires_at
"""

# A participant's session holds only while its key is valid (the join: not revoked);
# the admin's credential is checked by the caller against the configured token.
SELECT_SESSION = """
SELECT s.participant, s.credential_hash, s.csrf_token, s.expires_at, k.label
FROM ui_sessions AS s
LEFT JOIN api_keys AS k ON k.key_hash = s.credential_hash AND k.revoked_at IS NULL
WHERE s.session_hash = $1
  AND s.expires_at > clock_timestamp()
  AND (s.participant IS NULL OR k.participant = s.participant)
"""

DELETE_SESSION = "DELETE FROM ui_sessions WHERE session_hash = $1"

DELETE_EXPIRED_SESSIONS = "DELETE FROM ui_sessions WHERE expires_at <= clock_timestamp()"

# The filters every exceptions tab shares: $1 whose book (NULL: the admin's every book),
# $2 product, $3 the other party, $4 first submitted before this instant (age).
# For the alleged tab "whose" is the counterparty named and "the other party" the
# participant that submitted the trade.
_WHO = "@WHO@"
_OWN = f"""
  AND {_WHO}
  AND ($2::text IS NULL OR product = $2)
  AND ($3::text IS NULL OR counterparty = $3)
  AND ($4::timestamptz IS NULL OR first_submitted_at <= $4)
"""
_ALLEGED = """
  AND counterparty = $1
  AND ($2::text IS NULL OR product = $2)
  AND ($3::text IS NULL OR participant = $3)
  AND ($4::timestamptz IS NULL OR first_submitted_at <= $4)
"""


def _by_book(statement: str) -> dict[bool, str]:
    """A statement of the book's own trades twice, by whether a book is named: ``$1 IS
    NULL OR participant = $1`` in one statement would let a generic plan (a prepared
    statement's after five runs) use no index on the participant and read every trade."""
    return {True: statement.replace(_WHO, "participant = $1"),
            False: statement.replace(_WHO, "$1::text IS NULL")}


# Matched today: the matching version was recorded since midnight UTC ($5).
_TODAY = "AND recorded_at >= $5"

# Oldest first: the trades nearest (or past) their cut-off lead each list. The limit is
# the last parameter.
SELECT_MISMATCHED = _by_book(f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND status = 'mismatched' {_OWN}
ORDER BY first_submitted_at, participant, trade_id LIMIT $5
""")
SELECT_UNMATCHED = _by_book(f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND status = 'unmatched' {_OWN}
ORDER BY first_submitted_at, participant, trade_id LIMIT $5
""")
SELECT_ALLEGED = f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched') {_ALLEGED}
ORDER BY first_submitted_at, participant, trade_id LIMIT $5
"""
SELECT_MATCHED_TODAY = _by_book(f"""
SELECT {TRADE_COLUMNS} FROM trades
WHERE latest AND status = 'matched' {_OWN} {_TODAY}
ORDER BY recorded_at DESC, participant, trade_id LIMIT $6
""")

# The counts on the tabs, under the same filters. Each count is bounded ($6): a tab says
# "1000+" rather than counting a million-row book on every live refresh.
COUNT_TABS = _by_book(f"""
SELECT
  (SELECT count(*) FROM (SELECT 1 FROM trades
     WHERE latest AND status = 'mismatched' {_OWN} LIMIT $6) AS m) AS mismatched,
  (SELECT count(*) FROM (SELECT 1 FROM trades
     WHERE latest AND status = 'unmatched' {_OWN} LIMIT $6) AS u) AS unmatched,
  (SELECT count(*) FROM (SELECT 1 FROM trades
     WHERE $1::text IS NOT NULL AND latest AND status IN ('unmatched', 'mismatched')
     {_ALLEGED} LIMIT $6) AS a) AS alleged,
  (SELECT count(*) FROM (SELECT 1 FROM trades
     WHERE latest AND status = 'matched' {_OWN} {_TODAY} LIMIT $6) AS t) AS matched_today
""")

# The overdue tab. Whether a trade is overdue is computed from its trade date and the
# cut-off of what decides its (pair, product), so the open trades are first read grouped
# by those — one row per group, not per trade (ix_trades_latest_by_participant,
# ix_trades_alleged; the admin's every book: ix_trades_resting) — and the overdue groups
# are then read back as trades. A book's own groups (alleged false) and, for a book,
# those of the trades others allege against it (alleged true), under the same filters.
OPEN_GROUPS = _by_book(f"""
SELECT false AS alleged, participant, counterparty, product, trade_date, count(*) AS open
FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched') {_OWN}
GROUP BY participant, counterparty, product, trade_date
UNION ALL
SELECT true, participant, counterparty, product, trade_date, count(*)
FROM trades
WHERE $1::text IS NOT NULL AND latest AND status IN ('unmatched', 'mismatched') {_ALLEGED}
GROUP BY participant, counterparty, product, trade_date
""")

# The open trades of the overdue groups ($2..$5 their keys, $6 their cut-offs), most
# overdue first; $1 the age filter again (a group holds trades of every age), $7 the limit.
SELECT_OVERDUE = f"""
SELECT {TRADE_COLUMNS} FROM trades
JOIN unnest($2::text[], $3::text[], $4::text[], $5::date[], $6::timestamptz[])
  AS due(due_participant, due_counterparty, due_product, due_trade_date, due_cutoff_at)
  ON participant = due_participant AND counterparty = due_counterparty
 AND product = due_product AND trade_date = due_trade_date
WHERE latest AND status IN ('unmatched', 'mismatched')
  AND ($1::timestamptz IS NULL OR first_submitted_at <= $1)
ORDER BY due_cutoff_at, first_submitted_at, participant, trade_id LIMIT $7
"""
