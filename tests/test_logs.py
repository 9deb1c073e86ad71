"""No log line carries an API key or the admin token: the real server's logs, captured
while clients send credentials every way a log could pick them up."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from aiohttp import ClientResponseError, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from kevin.logs import Scrubber
from tests.processes import Server, request

ADMIN_TOKEN = "logs-admin-" + secrets.token_hex(8)


async def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are (no client library would send these) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def leaks(text: str, secret: str) -> list[str]:
    """Lines holding the secret, or any 12 characters of it (a truncated quote)."""
    pieces = {secret[i:i + 12] for i in range(len(secret) - 11)}
    return [line for line in text.splitlines() if any(p in line for p in pieces)]


@pytest.mark.slow
async def test_no_log_line_carries_a_key_or_the_admin_token(db_url, tmp_path):
    previous = "the-admin-token-before-this-one"
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN,
                    KEVIN_ADMIN_TOKEN_PREVIOUS=previous).start()
    try:
        await server.wait_ready()
        status, body = await request("POST", f"{server.url}/v1/participants",
                                     json={"name": "BANKA"},
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 201
        key = body["api_key"]
        malformed = 0
        for secret in (key, ADMIN_TOKEN, previous):
            for header in (
                b"Authorization: Bearer " + secret.encode() + b"\x00",
                b"Authorization: Bearer " + secret.encode() + b"\x7f",
                b"Authorization: Bearer " + secret.encode() + b" " * 8200,
                b"Authorization: Bearer " + secret.encode() + b"x" * 8200,
                b"Authorization: " + secret.encode() + b"\x00",
                b"Authorization: " + secret.encode() + b"y" * 8200,
            ):
                answer = await raw_exchange(
                    server.port, b"GET /v1/trades HTTP/1.1\r\nHost: kevin\r\n" + header
                    + b"\r\n\r\n")
                assert answer.split(b" ", 2)[1] == b"400", answer[:200]
                malformed += 1
            # Valid requests that carry the secret where a line could quote it: a request
            # id the client chose, the path, a wrong scheme.
            for headers, path in (
                ({"Authorization": f"Bearer {secret}", "X-Request-ID": secret}, "/v1/trades"),
                ({"Authorization": f"Bearer {secret}"}, f"/v1/trades/{secret}"),
                ({"Authorization": f"Basic {secret}"}, "/v1/trades"),
            ):
                status, _ = await request("GET", server.url + path, headers=headers)
                assert status < 500
    finally:
        # Every line was written before its answer was sent; SIGTERM flushes the rest.
        assert await server.stop() == 0
    log = server.log()
    assert leaks(log, key) == []
    assert leaks(log, ADMIN_TOKEN) == []
    assert leaks(log, previous) == []
    lines = [json.loads(line) for line in log.splitlines()]
    refused = [line for line in lines if "refused a malformed request" in line["event"]]
    assert len(refused) == malformed
    # A client's malformed request is not the server's error: info, and no traceback.
    assert {line["level"] for line in refused} == {"info"}
    assert not any("exception" in line or "exc_info" in line for line in refused)
    assert not [line for line in lines if line["level"] == "error"]


def test_the_scrubber_takes_out_every_form_of_a_secret():
    token = 'adm"in\\tok-0123456789'
    scrub = Scrubber([token, None]).scrub
    key = "kv_" + "A1b2-_" * 7
    for text in (token, repr(token), json.dumps(token), repr(token.encode()),
                 json.dumps(repr(token.encode())), f"b'Bearer {key}\\x00'",
                 f"Got more than 8190 bytes when reading: b'Bearer {key[:20]}...'",
                 f"authorization={key}", f'{{"x": "{key}"}}'):
        scrubbed = scrub(text)
        assert "in\\tok-0123" not in scrubbed and "0123456789" not in scrubbed, scrubbed
        assert key[3:12] not in scrubbed, scrubbed
    assert scrub("Authorization: hunter2hunter2") == "Authorization: [redacted]"
    assert scrub("Bearer hunter2hunter2, then") == "Bearer [redacted], then"
    assert scrub("a request for /v1/trades/A-1") == "a request for /v1/trades/A-1"
    assert scrub("Cookie: kevin_session=s3ss10n; theme=dark") == "Cookie: [redacted]"
    # kevin consume logs a failed request's repr, which holds its request headers.
    failed = ClientResponseError(RequestInfo(
        URL("http://kevin/v1/feed"), "GET",
        CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {key}"})),
        URL("http://kevin/v1/feed")), (), status=503, message="unavailable")
    assert key in repr(failed)
    assert key[3:12] not in scrub(json.dumps({"error": repr(failed)}))
    assert scrub("b'kevin_session=s3ss10n\\x00'") == "b'kevin_session=[redacted]\\x00'"
