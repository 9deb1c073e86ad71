"""Every SQL statement of the match feed (sequencer, readers, relay position), named.

Parameters are always bound ($1, $2, …); no value is ever formatted into SQL text.
"""

from kevin.store.queries import TRADE_COLUMNS

# Any constant shared by every Kevin process: one sequencer at a time works, across all
# processes on the database — the one whose session holds this advisory lock (the lead).
# A session lock is released when its session ends, so a crashed or partitioned leader
# can never leave it behind; a follower takes over at its next try.
SEQUENCER_LOCK_KEY = 0x4B6576696E466565  # "KevinFee"

# Channels. Readers LISTEN on FEED_CHANNEL (payload: the new highest seq); the leading
# sequencer LISTENs on WRITTEN_CHANNEL, on which followers tell it of their processes'
# commits. Both are hints that wake a loop early; every loop also polls, because a
# notification is lost when nobody listens at that instant.
FEED_CHANNEL = "kevin_feed"
WRITTEN_CHANNEL = "kevin_feed_written"

TAKE_LEAD = "SELECT pg_try_advisory_lock($1)"

# The lead's connection named for what it does, after whatever names it (its pool's
# application_name, or the URL's), so that pg_stat_activity tells it from the others.
NAME_LEADER = """
SELECT set_config('application_name',
                  left(current_setting('application_name') || ' (feed sequencer)', 63), false)
"""

# The payload is a time on the server's clock (microseconds since the epoch) by which the
# follower's commits it announces had finished: the clock as the notification is sent,
# less $2, the microseconds the follower has waited since its last commit returned. A
# leader's round that STARTED later (SEQUENCE_BATCH's `started`) took its snapshot after
# those commits, so the leader need not run another round for them (kevin.feed.sequencer).
NOTIFY_WRITTEN = """
SELECT pg_notify($1, ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint - $2)::text)
"""

# The skipped-row remedy: writers insert feed rows with seq NULL in the version's own
# transaction (no counter, no lock: writers never wait for each other); this statement,
# run by the single sequencer AFTER those transactions commit, hands out the public seq.
#
# * Run by the session holding the lead (TAKE_LEAD, taken by an EARLIER statement), in
#   autocommit: one statement, one transaction, one round trip per round. Its snapshot
#   is taken after the lead was, and after this session's previous round committed, so
#   it sees every seq any sequencer ever committed: max(seq) is exact, and seqs are
#   handed out strictly increasing across rounds and processes. A transaction-scoped
#   lock per round would cost six round trips (probe, BEGIN, lock, batch, NOTIFY,
#   COMMIT) where this costs one.
# * Eligible rows: txid < pg_snapshot_xmin(pg_current_snapshot()). Every transaction
#   older than the snapshot's xmin has finished, so no transaction that is still in
#   flight can own an eligible row, and any row that commits later gets a larger seq
#   than all those assigned now. A reader that has seen seq N therefore never later
#   finds a committed update with a smaller seq (invariant 6): seqs only become visible
#   when this transaction commits, all at once, and later ones are always larger.
# * A row announces a trade version or a proposal version (alembic 0011), or an overdue
#   notice (alembic 0014); its subject is the trade (participant, trade_id), the
#   proposal, whose versions are held in order the same way, or the notice (one row).
# * Per-trade order: xids are assigned at a transaction's first write, so version n+1's
#   transaction may own a SMALLER xid than version n's (it wrote something else first and
#   then waited for n to commit). Then n+1 can be eligible while n (committed, but with
#   an xid >= xmin) is not; such a row is held back while an unsequenced smaller version
#   of the same trade exists that is not itself eligible, so a trade's versions never
#   appear on the feed out of order.
# * Order within a round: (written_at, id). written_at is clock_timestamp() at insert,
#   and version n+1 is only inserted after version n committed, so per trade written_at
#   grows with the version; id breaks ties between unrelated rows deterministically.
# * Held back is a window over the backlog (is any smaller version of the same trade in
#   it unfinished?), not a join: no plan can make it quadratic. A NOT EXISTS probe
#   would be planned in the sequencer's first rounds, on a near-empty feed, and that
#   kept plan joins the backlog with itself (a nested loop filtering every pair), which
#   after a large batch stalls the feed (docs/performance.md, change 18).
# * The window is needed only while some row of the backlog is unfinished: with none
#   (the usual case — after a bulk batch, tens of thousands of rows), every row is
#   finished and none held back, and the backlog is taken as it is, not sorted by trade.
#   Where it is sorted, by participant and subject in "C" order: the partitions are the
#   same under any deterministic collation, and the database's (C.UTF-8 here) compares
#   through the C library's collation, a third of the round's sort.
# * The window sees the oldest 4 x $1 unsequenced rows by (written_at, id), never the
#   whole backlog (a million rows after an outage: too long a sort for every round).
#   That is exact for every row it sees: a trade's smaller versions were written
#   earlier, so they are in the window too. A row past it waits for a later round: it is
#   delayed, never skipped nor reordered, and only while the rows ahead of it are held
#   by transactions still in flight.
# * Batches of at most $1 rows keep each round's transaction short; the caller loops
#   while a round is full. ix_feed_unsequenced serves the ordered scan of the backlog,
#   which stops at the window's end; an idle round finds the partial index empty and
#   writes nothing. It is the only index holding the unsequenced rows (uq_feed_seq holds
#   the rows that have a seq, alembic 0017): with statistics taken on a drained feed the
#   planner read the backlog from the seq key's NULLs, whole, and sorted it every round.
# * started: the server's clock (microseconds since the epoch) when the statement began,
#   before its snapshot was taken: every commit that finished before then is in it
#   (compared with NOTIFY_WRITTEN's payload).
# * Readers in every process are woken on $2 (FEED_CHANNEL) with the new highest seq,
#   delivered at commit, i.e. only once the seqs are visible. Only the sequencer
#   notifies (writers never do: a NOTIFY takes a database-wide lock at commit, which
#   would serialise every writer's commit; the sequencer is alone anyway).
SEQUENCE_BATCH = """
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
), backlog AS (
    SELECT id, written_at, participant,
           coalesce(trade_id, proposal_id::text, 'overdue ' || notice_id) AS subject,
           coalesce(version, proposal_version, 1) AS version, txid FROM feed
    WHERE seq IS NULL
    ORDER BY written_at, id
    LIMIT $1 * 4
), unfinished AS (
    SELECT EXISTS (SELECT 1 FROM backlog b, horizon h WHERE b.txid >= h.xmin) AS found
), unsequenced AS (
    SELECT b.id, b.written_at, b.txid < h.xmin AS finished,
           coalesce(bool_or(b.txid >= h.xmin) OVER (
               PARTITION BY b.participant COLLATE "C", b.subject COLLATE "C"
               ORDER BY b.version
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS held_back
    FROM backlog b, horizon h
    WHERE (SELECT found FROM unfinished)
    UNION ALL
    SELECT b.id, b.written_at, true, false FROM backlog b
    WHERE NOT (SELECT found FROM unfinished)
), eligible AS (
    SELECT id, written_at FROM unsequenced
    WHERE finished AND NOT held_back
    ORDER BY written_at, id
    LIMIT $1
), top AS (
    SELECT coalesce(max(seq), 0) AS seq FROM feed
), numbered AS (
    SELECT e.id, top.seq + row_number() OVER (ORDER BY e.written_at, e.id) AS seq
    FROM eligible e, top
), assigned AS (
    UPDATE feed SET seq = numbered.seq
    FROM numbered
    WHERE feed.id = numbered.id
    RETURNING feed.seq
)
SELECT count(*) AS assigned, max(seq) AS top,
       CASE WHEN max(seq) IS NOT NULL THEN pg_notify($2, max(seq)::text) END AS notified,
       (SELECT found FROM unfinished) AS waiting,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS started
FROM assigned
"""

MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM feed"

# Whether any committed update still waits for its seq (ix_feed_unsequenced's first entry).
ANY_UNSEQUENCED = "SELECT EXISTS (SELECT 1 FROM feed WHERE seq IS NULL)"

# A reader's page: every update after $1 in seq order, with the version it announces.
# trade_history (trades UNION ALL trades_archive), so an archived version still resolves
# for a consumer that resumes from far back; each side is probed by its primary key.
# Participant reads walk ix_feed_participant_seq; the admin's ($2 NULL) walk uq_feed_seq.
# Both branches are written out (not `$2 IS NULL OR participant = $2`) so the planner can
# use the right index for each with a generic plan.
# A proposal update (trade_id NULL) finds no version and reads its proposal version
# instead, as one JSON value (kevin.store.proposals reads it); an overdue update its
# notice, the same way; each join is a key probe.
_UPDATE_COLUMNS = ", ".join(f"t.{c.strip()}" for c in TRADE_COLUMNS.split(",")
                            if c.strip() != "participant")
_PAGE = f"""
SELECT f.seq, f.participant AS feed_participant, f.participant, {_UPDATE_COLUMNS},
       to_jsonb(p) AS proposal, to_jsonb(n) AS notice
FROM page f
LEFT JOIN trade_history t
       ON t.participant = f.participant AND t.trade_id = f.trade_id AND t.version = f.version
LEFT JOIN proposals p ON p.proposal_id = f.proposal_id AND p.version = f.proposal_version
LEFT JOIN overdue_notices n ON n.id = f.notice_id
ORDER BY f.seq
"""

SELECT_UPDATES_FOR_PARTICIPANT = f"""
WITH page AS MATERIALIZED (
    SELECT seq, participant, trade_id, version, proposal_id, proposal_version, notice_id
    FROM feed
    WHERE participant = $2 AND seq > $1
    ORDER BY seq
    LIMIT $3
){_PAGE}"""

SELECT_UPDATES_ALL = f"""
WITH page AS MATERIALIZED (
    SELECT seq, participant, trade_id, version, proposal_id, proposal_version, notice_id
    FROM feed
    WHERE seq > $1
    ORDER BY seq
    LIMIT $2
){_PAGE}"""

# The relay's durable position: the highest seq whose every update JetStream acknowledged.
SELECT_RELAY_CHECKPOINT = "SELECT seq FROM relay_checkpoints WHERE name = $1"

# GREATEST: a position only moves forward, even if two relays of the same name overlap.
# stubbed adds up: $3 is the number of updates this save's batch published as stubs.
UPSERT_RELAY_CHECKPOINT = """
INSERT INTO relay_checkpoints (name, seq, stubbed) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
SET seq = GREATEST(relay_checkpoints.seq, EXCLUDED.seq),
    stubbed = relay_checkpoints.stubbed + EXCLUDED.stubbed,
    updated_at = clock_timestamp()
"""
