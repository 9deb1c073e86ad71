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
from nats.js.api import DiscardPolicy
from nats.js.errors import NotFoundError

from kevin import jsoncodec
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


# --- limits: a message the transport refuses, a retry after a partial batch ----------


@pytest.fixture
async def nats_client():
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


# Seqs are handed out only past the cluster-wide xmin horizon (docs/feed.md), which a
# PostgreSQL shared with other work can hold back for many seconds.
SEQUENCED = 60.0


class _Stream:
    """A stream of the test's own, deleted afterwards."""

    def __init__(self, js, **config) -> None:
        tag = uuid.uuid4().hex[:10]
        self.js, self.name, self.prefix = js, f"KEVIN_LIMITS_{tag}", f"limits_{tag}.updates"
        self.config = config

    async def __aenter__(self) -> _Stream:
        await self.js.add_stream(name=self.name, subjects=[f"{self.prefix}.>"],
                                 duplicate_window=600.0, **self.config)
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self.js.delete_stream(self.name)
        except NotFoundError:
            pass

    async def update(self, **config) -> None:
        info = await self.js.stream_info(self.name)
        for key, value in config.items():
            setattr(info.config, key, value)
        await self.js.update_stream(info.config)

    async def messages(self) -> list:
        info = await self.js.stream_info(self.name)
        return [await self.js.get_msg(self.name, seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)] \
            if info.state.messages else []


class _Relay:
    """NatsRelay in this process, stopped at the end."""

    def __init__(self, pool, stream: _Stream) -> None:
        from kevin.feed.relay import NatsRelay

        self.relay = NatsRelay(pool, NATS_URL, stream=stream.name, subject_prefix=stream.prefix,
                               poll_interval=0.05)
        self.stop = asyncio.Event()

    async def __aenter__(self) -> _Relay:
        self.task = asyncio.create_task(self.relay.run(self.stop))
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


async def _submit(client, headers, trade_id: str, **overrides) -> None:
    resp = await client.post("/v1/trades", json=trade_body(trade_id, **overrides),
                             headers=headers)
    assert resp.status == 201, await resp.text()


async def _feed_seqs(client) -> list[int]:
    return [u["seq"] for u in await read_all(client, {"Authorization": "Bearer test-admin-token"})]


async def _relayed_to(conn, stream: _Stream, seq: int) -> bool:
    return await conn.fetchval("SELECT seq FROM relay_checkpoints WHERE name = $1",
                               f"nats:{stream.name}") == seq


async def _check_stub(client, headers, message, trade_id: str, limit: int) -> None:
    assert message.headers["Kevin-Stub"] == "too_large"
    assert message.headers["Nats-Msg-Id"] == f"BANKA/{trade_id}/1"
    stub = jsoncodec.loads(message.data)
    assert stub["trade_id"] == trade_id and stub["version"] == 1 and "trade" not in stub
    assert int(message.headers["Kevin-Seq"]) == stub["seq"]
    assert stub["stub"]["reason"] == "too_large"
    assert stub["stub"]["size"] > limit
    assert stub["stub"]["fetch"] == f"/v1/trades/{trade_id}/versions?participant=BANKA"
    resp = await client.get(stub["stub"]["fetch"], headers=headers)
    assert resp.status == 200
    assert [v["version"] for v in (await resp.json())["versions"]] == [1]


async def test_an_update_too_large_for_the_stream_is_published_as_a_stub_in_its_place(
        client, banks, pool, conn, jetstream):
    a, _ = banks
    async with _Stream(jetstream, max_msg_size=4096) as stream:
        await _submit(client, a, "A-1")
        await _submit(client, a, "A-2", attributes={"note": "x" * 10_000})
        await _submit(client, a, "A-3")
        seqs = await wait_for(lambda: _all_sequenced(client, 3), timeout=SEQUENCED)
        async with _Relay(pool, stream):
            await wait_for(lambda: _relayed_to(conn, stream, seqs[-1]), timeout=SEQUENCED)
        messages = await stream.messages()
        assert [int(m.headers["Kevin-Seq"]) for m in messages] == seqs  # in feed order
        assert "Kevin-Stub" not in (messages[0].headers or {})
        assert jsoncodec.loads(messages[0].data)["trade"]["trade_id"] == "A-1"
        await _check_stub(client, a, messages[1], "A-2", 4096)
        assert jsoncodec.loads(messages[2].data)["trade"]["trade_id"] == "A-3"
        assert await conn.fetchval("SELECT stubbed FROM relay_checkpoints WHERE name = $1",
                                   f"nats:{stream.name}") == 1
        metrics = await (await client.get("/metrics")).text()
        assert f'kevin_relay_stubbed{{relay="nats:{stream.name}"}} 1.0' in metrics
        assert f'kevin_relay_position{{relay="nats:{stream.name}"}} {seqs[-1]}.0' in metrics


async def test_a_limit_lowered_under_a_running_relay_is_met_with_a_stub_too(
        client, banks, pool, conn, jetstream):
    """The relay learns the stream's limit when it connects; JetStream's refusal of a
    message over a limit set later is handled the same way (the stub comes after the
    rest of its batch)."""
    a, _ = banks
    async with _Stream(jetstream) as stream:
        async with _Relay(pool, stream):
            await _submit(client, a, "A-1")
            seqs = await wait_for(lambda: _all_sequenced(client, 1), timeout=SEQUENCED)
            await wait_for(lambda: _relayed_to(conn, stream, seqs[-1]), timeout=SEQUENCED)
            await stream.update(max_msg_size=4096)
            await _submit(client, a, "A-2", attributes={"note": "x" * 10_000})
            await _submit(client, a, "A-3")
            seqs = await wait_for(lambda: _all_sequenced(client, 3), timeout=SEQUENCED)
            await wait_for(lambda: _relayed_to(conn, stream, seqs[-1]), timeout=SEQUENCED)
        by_id = {m.headers["Nats-Msg-Id"]: m for m in await stream.messages()}
        assert sorted(by_id) == ["BANKA/A-1/1", "BANKA/A-2/1", "BANKA/A-3/1"]
        await _check_stub(client, a, by_id["BANKA/A-2/1"], "A-2", 4096)


async def test_a_retry_publishes_only_what_jetstream_has_not_acknowledged(
        client, banks, pool, conn, jetstream, nats_client):
    """A stream that takes three messages and refuses the rest (max_msgs, discard new)
    until it is given room: the three it acknowledged are published once, however often
    the relay retries the others. A plain subscriber sees every publish, duplicates too."""
    a, _ = banks
    async with _Stream(jetstream, max_msgs=3, discard=DiscardPolicy.NEW) as stream:
        published: list[str] = []

        async def seen(msg) -> None:
            published.append(msg.headers["Nats-Msg-Id"])

        subscription = await nats_client.subscribe(f"{stream.prefix}.>", cb=seen)
        for i in range(6):
            await _submit(client, a, f"A-{i}")
        seqs = await wait_for(lambda: _all_sequenced(client, 6), timeout=SEQUENCED)
        async with _Relay(pool, stream) as relay:
            await wait_for(lambda: _relayed_to(conn, stream, seqs[2]), timeout=SEQUENCED)
            # Let it retry the refused three a few times.
            await wait_for(lambda: _at_least(published, 3 + 3 * 3), timeout=SEQUENCED)
            await stream.update(max_msgs=-1)
            await wait_for(lambda: _relayed_to(conn, stream, seqs[-1]), timeout=SEQUENCED)
            assert relay.relay.stubbed == 0
        await subscription.unsubscribe()
        first = [f"BANKA/A-{i}/1" for i in range(3)]
        assert [published.count(m) for m in first] == [1, 1, 1], published
        assert [m.headers["Nats-Msg-Id"] for m in await stream.messages()] == \
            [f"BANKA/A-{i}/1" for i in range(6)]


async def _all_sequenced(client, n: int) -> list[int] | None:
    seqs = await _feed_seqs(client)
    return seqs if len(seqs) >= n else None


async def _at_least(items: list, n: int) -> bool:
    return len(items) >= n
