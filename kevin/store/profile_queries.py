"""Every SQL statement of matching profiles, named.

Parameters are always bound ($1, $2, …); column lists are constants.
"""

PROFILE_COLUMNS = """
    name, version, retired, participant_a, participant_b, product, body, actor, recorded_at
"""

# Writers of one profile are serialised by an advisory lock on its name (kevin.store
# .profiles.PROFILE_LOCK_CLASS), so the flip of version n and the insert of n+1 never
# race; the partial unique index ix_profiles_one_latest would refuse a second latest row
# anyway. Writers of *different* names claiming the same (pair, product) are not
# serialised: ix_profiles_one_claim refuses the second insert (unique violation → 409).
FLIP_LATEST_PROFILE = """
UPDATE profiles SET latest = false WHERE name = $1 AND latest
RETURNING version, retired, participant_a, participant_b, product, body
"""

INSERT_PROFILE = f"""
INSERT INTO profiles (name, version, latest, retired, participant_a, participant_b,
                      product, body, actor)
VALUES ($1, $2, true, $3, $4, $5, $6, $7, $8)
RETURNING {PROFILE_COLUMNS}
"""

SELECT_LATEST_PROFILE = f"""
SELECT {PROFILE_COLUMNS} FROM profiles WHERE name = $1 AND latest
"""

SELECT_PROFILE_AS_OF = f"""
SELECT {PROFILE_COLUMNS} FROM profiles
WHERE name = $1 AND recorded_at <= $2
ORDER BY version DESC
LIMIT 1
"""

# Live profiles (latest and not retired), by name; keyset-paginated on name.
SELECT_LIVE_PROFILES = f"""
SELECT {PROFILE_COLUMNS} FROM profiles
WHERE latest AND NOT retired AND name > $1
ORDER BY name COLLATE "C"
LIMIT $2
"""

# The profiles live at $1: per name, the last version recorded at or before it, unless
# that version retired the profile.
SELECT_PROFILES_AS_OF = f"""
SELECT * FROM (
    SELECT DISTINCT ON (name) {PROFILE_COLUMNS} FROM profiles
    WHERE recorded_at <= $1
    ORDER BY name, version DESC
) AS at_instant
WHERE NOT retired AND name > $2
ORDER BY name COLLATE "C"
LIMIT $3
"""

# The live profile that decides a trade of pair ($1 < $2) in product $3: the pair's
# profile for the product, else its "*" profile (precedence, most specific first).
# Served by ix_profiles_one_claim: at most two probes.
SELECT_PROFILE_FOR_TRADE = f"""
SELECT {PROFILE_COLUMNS} FROM profiles
WHERE latest AND NOT retired AND participant_a = $1 AND participant_b = $2
  AND product IN ($3, '*')
ORDER BY product = '*'
LIMIT 1
"""

# The same as it stood at instant $4: per claim (product or "*"), the version of the
# profile that held it then. A claim moves between names only through a retirement or a
# new version of the holder, so the last version recorded per name is what was in force.
SELECT_PROFILE_FOR_TRADE_AS_OF = f"""
SELECT * FROM (
    SELECT DISTINCT ON (name) {PROFILE_COLUMNS} FROM profiles
    WHERE name IN (SELECT name FROM profiles
                   WHERE participant_a = $1 AND participant_b = $2
                     AND product IN ($3, '*') AND recorded_at <= $4)
      AND recorded_at <= $4
    ORDER BY name, version DESC
) AS at_instant
WHERE NOT retired AND participant_a = $1 AND participant_b = $2 AND product IN ($3, '*')
ORDER BY product = '*'
LIMIT 1
"""

SELECT_PARTICIPANTS_NAMED = """
SELECT name FROM participants WHERE name = ANY($1::text[])
"""

# Every live profile naming participant $1 (a batch's lookups, resolved in Python): a
# small table, probed through ix_profiles_one_claim on each side.
SELECT_LIVE_PROFILES_OF = f"""
SELECT {PROFILE_COLUMNS} FROM profiles
WHERE latest AND NOT retired AND participant_a = $1
UNION ALL
SELECT {PROFILE_COLUMNS} FROM profiles
WHERE latest AND NOT retired AND participant_b = $1
"""
