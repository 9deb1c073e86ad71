"""`kevin relay nats` against the real JetStream at 127.0.0.1:4222: killed with SIGKILL
mid-stream and restarted, every update reaches the stream exactly once; re-published
duplicates are absorbed by Nats-Msg-Id."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid

import nats
import pytest
from nats.js.errors import NotFoundError

from tests.conftest import trade_body, wait_for
from tests.feed_helpers import read_all
from tests.processes import kevin_env

NATS_URL = "nats://127.0.0.1:4222"

pytestmark = pytest.mark.slow


@pytest.fixture
async def jetstream():
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _stream_messages(js, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except NotFoundError:
        return 0


async def test_relay_killed_and_restarted_loses_nothing_and_doubles_nothing(
        client, banks, db_url, conn, jetstream, tmp_path):
    a, b = banks
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"KEVIN_TEST_{tag}", f"test_{tag}.updates"
    argv = [sys.executable, "-m", "kevin.cli", "relay", "nats", "--url", NATS_URL,
            "--stream", stream, "--subject-prefix", prefix]
    env = kevin_env(KEVIN_DATABASE_URL=db_url)

    def start() -> subprocess.Popen:
        with open(tmp_path / "relay.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)

    enough = asyncio.Event()
    written = [0]

    async def write() -> None:
        """Writes until told to stop: the kill below always lands mid-stream."""
        i = 0
        while not enough.is_set():
            who, name = (a, "A") if i % 3 else (b, "B")
            body = trade_body(f"{name}-{i}", counterparty="BANKB" if who is a else "BANKA",
                              product=f"P{i}")
            resp = await client.post("/v1/trades", json=body, headers=who)
            assert resp.status == 201, await resp.text()
            written[0] += 1
            i += 1

    async def at_least(n: int) -> bool:
        return await _stream_messages(jetstream, stream) >= n

    process = start()
    try:
        writing = asyncio.create_task(write())
        await wait_for(lambda: _checkpoint_above(conn, stream, 60), timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = written[0]
        # Re-publish what a crash between JetStream's acks and the checkpoint would:
        # rewind the durable position by 40 updates.
        rewound = await conn.fetchval(
            "UPDATE relay_checkpoints SET seq = seq - 40 WHERE name = $1 RETURNING seq",
            f"nats:{stream}")
        assert rewound is not None and rewound > 0
        before = await _stream_messages(jetstream, stream)
        process = start()
        await wait_for(lambda: _written(written, killed_at + 60), timeout=60)
        enough.set()
        await asyncio.wait_for(writing, 30)
        total = written[0]
        await wait_for(lambda: at_least(total), timeout=30)
        # Settle: the relay has caught up with the whole feed, so nothing more will come.
        feed = await read_all(client, {"Authorization": "Bearer test-admin-token"})
        assert len(feed) == total
        await wait_for(lambda: _checkpoint_at(conn, stream, feed[-1]["seq"]), timeout=30)

        info = await jetstream.stream_info(stream)
        assert info.state.messages == total  # the 40 re-published were absorbed
        assert before >= 60
        seen = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await jetstream.get_msg(stream, seq)
            seen.append((msg.subject, msg.headers["Nats-Msg-Id"], int(msg.headers["Kevin-Seq"])))
        ids = [m for _, m, _ in seen]
        assert len(set(ids)) == total
        assert set(ids) == {f"{u['participant']}/{u['trade_id']}/{u['version']}" for u in feed}
        assert all(subject == f"{prefix}.{mid.split('/')[0]}" for subject, mid, _ in seen)
        kevin_seqs = [s for _, _, s in seen]
        assert kevin_seqs == sorted(kevin_seqs)  # stored in feed order
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        try:
            await jetstream.delete_stream(stream)
        except NotFoundError:
            pass


async def _checkpoint_at(conn, stream, seq):
    return await conn.fetchval("SELECT seq FROM relay_checkpoints WHERE name = $1",
                               f"nats:{stream}") == seq


async def _checkpoint_above(conn, stream, seq):
    return (await conn.fetchval("SELECT seq FROM relay_checkpoints WHERE name = $1",
                                f"nats:{stream}") or 0) > seq


async def _written(written, n):
    return written[0] >= n
