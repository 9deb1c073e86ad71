"""Clients nobody here wrote: ones that leave, stall, or dawdle over a request head. Each
against a real `kevin serve` on real sockets, where the behaviour is the server's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket

import aiohttp
import pytest

from kevin.api.app import create_app
from kevin.config import ConfigError, Settings
from tests.conftest import ADMIN_TOKEN, trade_body, wait_for
from tests.processes import Server, request

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SSE = {**AUTH, "Accept": "text/event-stream"}


async def _serve(db_url: str, tmp_path, **settings: str) -> Server:
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN, **settings).start()
    await server.wait_ready()
    return server


async def _metric(url: str, name: str, **labels: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if line.partition("{")[0].split(" ")[0] == name and found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow
async def test_an_sse_disconnect_is_a_499_freed_at_once_and_not_an_error(db_url, tmp_path):
    server = await _serve(db_url, tmp_path)  # the default 15 s heartbeat
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{server.url}/v1/feed",
                                     headers={**SSE, "X-Request-ID": "sse-one"})
            assert resp.status == 200
            assert resp.headers["X-Request-ID"] == "sse-one"
            assert b"connected" in await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)

            async def streams(n: float) -> bool:
                return await _metric(server.url, "kevin_feed_sse_streams") == n
            await wait_for(lambda: streams(1))
            resp.close()  # the client goes away, as a closed browser tab does
            left = asyncio.get_running_loop().time()
            await wait_for(lambda: streams(0), timeout=5)
            assert asyncio.get_running_loop().time() - left < 5
        duration = "kevin_http_request_duration_seconds_count"
        assert await _metric(server.url, duration, method="GET", route="/v1/feed",
                             status="499") == 1
        assert await _metric(server.url, duration, method="GET", route="/v1/feed",
                             status="500") is None
    finally:
        assert await server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines()]
    assert not [line for line in lines if line["level"] == "error"]
    [feed] = [line for line in lines if line.get("path") == "/v1/feed"]
    assert feed["status"] == 499 and feed["request_id"] == "sse-one"


async def test_an_incoming_request_id_is_kept_only_when_printable_and_short(
        service, aiohttp_client):
    client = await aiohttp_client(create_app(service, ADMIN_TOKEN))
    for sent, kept in (("abc-123", True), ("a b:c/d", True), ("x" * 128, True),
                       ("x" * 129, False), ("", False), ("é-not-ascii", False)):
        resp = await client.get("/healthz", headers={"X-Request-ID": sent})
        echoed = resp.headers["X-Request-ID"]
        if kept:
            assert echoed == sent
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", echoed), (sent, echoed)
    # A stream's headers leave before its handler returns: it carries the id too.
    resp = await client.get("/v1/feed", headers={**SSE, "X-Request-ID": "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    resp.close()
    resp = await client.get("/v1/feed", headers=SSE)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    resp.close()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _stalled_stream(port: int) -> socket.socket:
    """An SSE client that connects and never reads: a small receive buffer, so the
    server's writes back up at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    await asyncio.get_running_loop().sock_sendall(
        sock, b"GET /v1/feed HTTP/1.1\r\nHost: kevin\r\nAccept: text/event-stream\r\n"
              b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n\r\n")
    return sock


@pytest.mark.slow
async def test_stalled_sse_streams_hold_bounded_memory(db_url, tmp_path):
    """50 clients stop reading a feed of ~7 MB each: the server's memory stays within
    50 MiB of what it was before they came, and it keeps answering promptly."""
    server = await _serve(db_url, tmp_path)
    socks: list[socket.socket] = []
    try:
        status, body = await request("POST", f"{server.url}/v1/participants",
                                     json={"name": "BANKA"}, headers=AUTH)
        assert status == 201
        bank = {"Authorization": f"Bearer {body['api_key']}"}
        big = {"blob": "x" * 60_000}  # a trade just under the 64 KiB limit
        async with aiohttp.ClientSession() as session:
            for i in range(120):
                async with session.post(f"{server.url}/v1/trades", headers=bank,
                                        json=trade_body(f"BIG-{i}", attributes=big)) as r:
                    assert r.status == 201, await r.text()

        async def sequenced() -> bool:
            return (await _metric(server.url, "kevin_feed_last_seq") or 0) >= 120
        await wait_for(sequenced)
        assert server.process is not None
        pid = server.process.pid
        idle = _rss_mib(pid)
        socks = [await _stalled_stream(server.port) for _ in range(50)]

        async def streams(n: float) -> bool:
            return await _metric(server.url, "kevin_feed_sse_streams") == n
        await wait_for(lambda: streams(50))
        # The streams stall within a moment; sample the server's memory for some seconds
        # (well inside the 30 s after which a stalled client is dropped).
        loop = asyncio.get_running_loop()
        peak, slowest, until = idle, 0.0, loop.time() + 8
        while loop.time() < until:
            peak = max(peak, _rss_mib(pid))
            started = loop.time()
            status, _ = await request("GET", f"{server.url}/readyz")
            assert status == 200
            slowest = max(slowest, loop.time() - started)
            await asyncio.sleep(0.25)
        print(f"RSS idle {idle:.0f} MiB, peak with 50 stalled streams {peak:.0f} MiB, "
              f"slowest /readyz {slowest:.3f} s")
        assert peak - idle < 50, (idle, peak)
        assert slowest < 2.0  # 3 s and more when each stream buffered its whole backlog
    finally:
        for sock in socks:
            sock.close()
        assert await server.stop() == 0


async def _dribble(port: int, head: bytes, every: float) -> tuple[bytes, float]:
    """Send a request head a byte at a time; what the server answered, and when (seconds
    after connecting) it closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    opened = loop.time()

    async def dribble() -> None:
        for i in range(len(head)):
            writer.write(head[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)

    sender = asyncio.create_task(dribble())
    try:
        answer = await asyncio.wait_for(reader.read(), 8)  # until the server closes
        return answer, loop.time() - opened
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()


@pytest.mark.slow
async def test_a_connection_without_a_complete_request_head_in_time_is_closed(
        db_url, tmp_path):
    server = await _serve(db_url, tmp_path, KEVIN_REQUEST_HEAD_TIMEOUT="1")
    head = b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nX-Slow: " + b"z" * 40 + b"\r\n\r\n"
    try:
        # One byte every 0.2 s would take 14 s; the server stops waiting after 1 s.
        answer, closed = await _dribble(server.port, head, 0.2)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
        assert closed < 4
        # Nothing at all is no better.
        answer, closed = await _dribble(server.port, b"", 0)
        assert answer.startswith(b"HTTP/1.1 408 ") and closed < 4
        # A kept-alive connection: the first request is answered; a second head dribbled
        # after it meets the same deadline.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: kevin\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 200 ")
        length = int(re.search(rb"Content-Length: (\d+)", first).group(1))
        await reader.readexactly(length)
        writer.write(b"GET /heal")
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 408 ")
        writer.close()
        # A request whose head came in time is not cut short by the deadline: an SSE stream
        # outlives it.
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{server.url}/v1/feed", headers=SSE)
            assert resp.status == 200
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
            await _outlast_the_head_deadline(server.port)
            assert await _metric(server.url, "kevin_feed_sse_streams") == 1
            assert not resp.content.at_eof()
            resp.close()
    finally:
        assert await server.stop() == 0
    assert "closing a connection that sent no complete request head in time" in server.log()


async def _outlast_the_head_deadline(port: int) -> None:
    """Return once the head deadline has run out since the call: a witness connection
    opened now, sending nothing, is closed with a 408. Whatever was idle (or streaming)
    since before the call has been so for longer than the deadline."""
    answer, _ = await _dribble(port, b"", 0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    return head, await asyncio.wait_for(reader.readexactly(length), 30)


@pytest.mark.slow
async def test_a_kept_alive_connection_idle_after_a_large_body_is_not_timed_out(
        db_url, tmp_path):
    """Reading a large body, aiohttp pauses and resumes the connection, and on resuming
    hands the protocol no bytes at all: that is no next request's head, and the idle
    connection after the answer must not be closed with a 408 for it."""
    server = await _serve(db_url, tmp_path, KEVIN_REQUEST_HEAD_TIMEOUT="1")
    try:
        status, body = await request("POST", f"{server.url}/v1/participants",
                                     json={"name": "BANKA"}, headers=AUTH)
        assert status == 201
        lines = b"\n".join(json.dumps(trade_body(f"A-{i}", attributes={"pad": "x" * 400}))
                           .encode() for i in range(3000))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /v1/trades/batch HTTP/1.1\r\nHost: kevin\r\n"
                     b"Authorization: Bearer " + body["api_key"].encode() + b"\r\n"
                     b"Content-Type: application/x-ndjson\r\n"
                     b"Content-Length: " + str(len(lines)).encode() + b"\r\n\r\n" + lines)
        head, answer = await _answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert len(json.loads(answer)["results"]) == 3000
        await _outlast_the_head_deadline(server.port)  # idle meanwhile, no byte sent
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: kevin\r\n\r\n")
        head, _ = await _answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
        writer.close()
    finally:
        assert await server.stop() == 0
    # The witness's connection, and no other.
    assert server.log().count(
        "closing a connection that sent no complete request head in time") == 1


def test_the_request_head_timeout_is_configurable_and_checked():
    assert Settings.from_env({}).request_head_timeout == 10
    assert Settings.from_env({"KEVIN_REQUEST_HEAD_TIMEOUT": "2.5"}).request_head_timeout == 2.5
    for bad in ("0", "-1", "soon", "nan", "99999"):
        with pytest.raises(ConfigError, match="KEVIN_REQUEST_HEAD_TIMEOUT"):
            Settings.from_env({"KEVIN_REQUEST_HEAD_TIMEOUT": bad})
