-- The least work a matched pair needs, for pgbench (kevin bench's minimal ceiling): the
-- sell rests, the buy arrives, finds the resting sell under a row lock, both lose
-- `latest`, both get a matched version, and every version gets its feed row. One
-- transaction per pair, on Kevin's own tables (their indexes and triggers are the
-- schema's, not Kevin's code), with none of Kevin's statements: a statement Kevin adds
-- slows only the service, never this ceiling. Each client has a match key of its own.
SELECT 'S-' || gen_random_uuid() AS sell_id, 'B-' || gen_random_uuid() AS buy_id,
       gen_random_uuid() AS match_id \gset
BEGIN;
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
    side, product, quantity, price, currency, trade_date, settlement_date, location, actor,
    first_submitted_at)
VALUES ('BANKA', ':sell_id', 1, true, 'unmatched', 'submitted', 'BANKB', 'sell',
    'P' || :client_id, 100, 1000, 'USD', '2026-11-20', '2026-11-24', 'LDN', 'BANKA',
    clock_timestamp());
INSERT INTO feed (participant, trade_id, version) VALUES ('BANKA', ':sell_id', 1);
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
    side, product, quantity, price, currency, trade_date, settlement_date, location, actor,
    first_submitted_at)
VALUES ('BANKB', ':buy_id', 1, true, 'unmatched', 'submitted', 'BANKA', 'buy',
    'P' || :client_id, 100, 1000, 'USD', '2026-11-20', '2026-11-24', 'LDN', 'BANKB',
    clock_timestamp());
INSERT INTO feed (participant, trade_id, version) VALUES ('BANKB', ':buy_id', 1);
SELECT trade_id FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched') AND product = 'P' || :client_id
  AND currency = 'USD' AND participant = 'BANKA' AND counterparty = 'BANKB'
  AND side = 'sell' AND price BETWEEN 999.5 AND 1000.5
ORDER BY abs(price - 1000), first_submitted_at, trade_id
LIMIT 1 FOR UPDATE;
UPDATE trades SET latest = false
WHERE latest AND ((participant = 'BANKA' AND trade_id = ':sell_id')
               OR (participant = 'BANKB' AND trade_id = ':buy_id'));
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
    side, product, quantity, price, currency, trade_date, settlement_date, location, actor,
    first_submitted_at, match_id, match_counterparty_trade_id, match_counterparty_version)
VALUES
    ('BANKA', ':sell_id', 2, true, 'matched', 'matched', 'BANKB', 'sell', 'P' || :client_id,
     100, 1000, 'USD', '2026-11-20', '2026-11-24', 'LDN', 'BANKB', clock_timestamp(),
     ':match_id', ':buy_id', 2),
    ('BANKB', ':buy_id', 2, true, 'matched', 'matched', 'BANKA', 'buy', 'P' || :client_id,
     100, 1000, 'USD', '2026-11-20', '2026-11-24', 'LDN', 'BANKB', clock_timestamp(),
     ':match_id', ':sell_id', 2);
INSERT INTO feed (participant, trade_id, version)
VALUES ('BANKA', ':sell_id', 2), ('BANKB', ':buy_id', 2);
COMMIT;
