"""Schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

POST /v1/trades/batch takes application/x-ndjson, a media type schemathesis cannot write
by itself; the document types the body as a string, so it is sent as text, whatever the
generated lines are (most are `invalid` results, which is half the point)."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# The imports' files (CSV, FpML) are typed as strings too, and sent as the text generated.
schemathesis.serializer.alias(["text/csv", "application/xml"], "text/plain")
