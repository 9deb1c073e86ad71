"""A property: whatever body a client sends to any route that reads one — deeply nested
JSON, numbers past any range, attributes too deep or too long, bytes that are no JSON —
the answer is never a 5xx, and every error is {"error", "message", "details"}.

The routes come from the served OpenAPI document, so a new route is covered the day it
is documented. Examples run against one service and database (the answers, not the
state, are what is checked), as a participant and as the admin.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kevin import jsoncodec
from kevin.api.openapi import openapi_document
from tests.conftest import ADMIN, trade_body

PATH_VALUES = {"trade_id": "A-1", "product": "XAU", "name": "P1", "participant": "BANKA",
               "match_id": "00000000-0000-0000-0000-000000000000",
               "proposal_id": "00000000-0000-0000-0000-000000000000"}


def _routes() -> list[tuple[str, str, str]]:
    """(method, path, content type) of every documented operation that takes a body."""
    found = []
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or "requestBody" not in operation:
                continue
            for content_type in operation["requestBody"]["content"]:
                found.append((method.upper(), path.format(**PATH_VALUES), content_type))
    return sorted(found)


ROUTES = _routes()

# Numbers no field takes: past PostgreSQL's numeric range, past any float, -0, long digits.
NASTY_NUMBERS = [b"1e131072", b"1e-16384", b"-1e131072", b"1e400", b"-0", b"-0.0",
                 b"9" * 50, b"0." + b"0" * 60 + b"1", b"1" * 5000, b"NaN", b"-Infinity",
                 b"1e99", b"1E+5"]


def _nested(depth: int, opener: bytes, closer: bytes, closed: bool) -> bytes:
    return opener * depth + ((b"1" + closer * depth) if closed else b"")


deep_json = st.one_of(
    st.builds(lambda n, closed: _nested(n, b"[", b"]", closed), st.integers(1, 100_000),
              st.booleans()),
    st.builds(lambda n, closed: _nested(n, b'{"a":', b"}", closed), st.integers(1, 100_000),
              st.booleans()),
)


def _trade_with(field: str, value: bytes) -> bytes:
    raw = jsoncodec.dumps(trade_body("P-1"))
    if field == "attributes":
        return raw.replace(b'"attributes":{"desk":"metals"}', b'"attributes":' + value)
    placeholder = b'"%s":"%s"' % (field.encode(), str(trade_body()[field]).encode())
    return raw.replace(placeholder, b'"%s":%s' % (field.encode(), value))


nasty_trades = st.one_of(
    st.builds(_trade_with, st.sampled_from(["quantity", "price"]),
              st.sampled_from(NASTY_NUMBERS)),
    st.builds(lambda n: _trade_with("attributes", b'{"n":' + n + b"}"),
              st.sampled_from(NASTY_NUMBERS)),
    st.builds(lambda depth: _trade_with("attributes", _nested(depth, b'{"a":', b"}", True)),
              st.integers(1, 1200)),
    st.builds(lambda depth: _trade_with("attributes", b'{"l":' + _nested(depth, b"[", b"]", True)
                                        + b"}"), st.integers(1, 1200)),
    st.builds(lambda size: _trade_with("attributes", b'{"s":"' + b"x" * size + b'"}'),
              st.integers(60_000, 1_100_000)),
)

json_values = st.recursive(
    # Integers the encoder writes (64-bit); wider numbers come as text in NASTY_NUMBERS.
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.sampled_from([jsoncodec.loads(n) for n in NASTY_NUMBERS
                       if n not in (b"NaN", b"-Infinity")]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)

bodies = st.one_of(
    deep_json,
    nasty_trades,
    json_values.map(lambda v: jsoncodec.dumps(v)),
    st.binary(max_size=300),
)


def _error_shaped(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error", "message", "details"} \
        and isinstance(body["error"], str) and isinstance(body["message"], str)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(route=st.sampled_from(ROUTES), body=bodies, as_admin=st.booleans(),
       lines=st.integers(1, 3))
async def test_no_body_on_any_route_gives_a_5xx_and_every_error_has_the_shape(
        client, banks, route, body, as_admin, lines):
    method, path, content_type = route
    headers = ADMIN if as_admin else banks[0]
    if content_type == "application/x-ndjson":
        body = b"\n".join([body] * lines)
    resp = await client.request(method, path, data=io.BytesIO(body),
                                headers={**headers, "Content-Type": content_type,
                                         "If-Match": '"1"'})
    assert resp.status < 500, (method, path, body[:200], await resp.text())
    answer = jsoncodec.loads(await resp.read()) if resp.content_type == "application/json" \
        else None
    if resp.status >= 400:
        assert _error_shaped(answer), (method, path, resp.status, answer)
    elif content_type == "application/x-ndjson" and isinstance(answer, dict):
        for result in answer["results"]:
            assert result["error"] is None or _error_shaped(result["error"]), result
