"""The statements of trade notes (alembic 0020), named. Parameters are always bound."""

_NOTE_COLUMNS = "note_id, participant, trade_id, version, body, author, key_id, written_at"

# The label of the key ($1: its hash) a note is written with; no row: not a key.
SELECT_KEY_LABEL = "SELECT label FROM api_keys WHERE key_hash = $1"

# A note on the participant's trade ($1, $2) at its latest version; no row when the
# participant has no such trade.
INSERT_NOTE = f"""
INSERT INTO trade_notes (participant, trade_id, version, body, author, key_id)
SELECT participant, trade_id, version, $3, $4, $5 FROM trades
WHERE participant = $1 AND trade_id = $2 AND latest
RETURNING {_NOTE_COLUMNS}
"""

# How many notes each trade ($1 participants, $2 trade ids, pairwise) has, and the last
# one's author and instant; a trade with none has no row.
SELECT_SUMMARIES = """
SELECT n.participant, n.trade_id, count(*) AS notes,
       (array_agg(n.author ORDER BY n.note_id DESC))[1] AS last_author,
       max(n.written_at) AS last_written_at
FROM unnest($1::text[], $2::text[]) AS t(participant, trade_id)
JOIN trade_notes AS n ON n.participant = t.participant AND n.trade_id = t.trade_id
GROUP BY n.participant, n.trade_id
"""

# A page of the notes on the participant's trade ($1, $2): those after note $3, oldest
# first, $4 of them at most. A walk of ix_trade_notes_participant_trade_id_note_id.
SELECT_NOTES_PAGE = f"""
SELECT {_NOTE_COLUMNS} FROM trade_notes
WHERE participant = $1 AND trade_id = $2 AND note_id > $3
ORDER BY note_id
LIMIT $4
"""

# The newest $3 notes on the participant's trade ($1, $2), oldest first: the same index
# walked backwards.
SELECT_LATEST_NOTES = f"""
SELECT * FROM (
    SELECT {_NOTE_COLUMNS} FROM trade_notes
    WHERE participant = $1 AND trade_id = $2
    ORDER BY note_id DESC
    LIMIT $3
) AS newest
ORDER BY note_id
"""
