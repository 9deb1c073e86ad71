"""Stopping: the signals that ask a process to stop, and background tasks that must end
with it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT or SIGTERM sets. On leaving, both are ignored from then on:
    a repeated SIGTERM (an impatient supervisor, a script sending it twice) must not kill
    the process half-way through its shutdown. The handlers come off the loop first, or
    closing the loop would restore the default action (death by SIGTERM)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel every task, then wait until each has finished unwinding."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Health:
    """Whether this process can still do its job by itself (``/healthz``). A database
    that is down is not such a failure — Kevin reconnects when it is back — but an
    embedded PostgreSQL that this process runs and could not restart is: a process
    supervisor should restart the service."""

    def __init__(self) -> None:
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        self.failure = reason
