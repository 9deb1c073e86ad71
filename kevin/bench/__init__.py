"""``kevin bench``: TradeService measured against the physical limit of the same machine.

Absolute figures on a shared machine mean little, so every run measures a ceiling and the
service against the same PostgreSQL server, in scratch databases it creates and drops:

* pairs — a matched pair of trades (sell, then the buy that matches it). The ceiling issues
  the very statements the engine issues for a pair straight over asyncpg, one transaction
  per pair, no HTTP and no Python models; the service is a real ``kevin serve`` process
  driven over HTTP by a separate load-generator process (:mod:`kevin.bench.loadgen`).
* batch — bulk ingest through ``POST /v1/trades/batch`` against a COPY-only ceiling.
"""
