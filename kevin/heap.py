"""Giving the heap a large request freed back to the operating system; and the cyclic
garbage collector paused while a large request builds it (``collector_paused``).

A 10,000-line batch builds its answer, the rows it writes and their models at once:
well over a hundred MiB of short-lived objects. Python frees them, but glibc's malloc
keeps the freed pages for reuse, so without this the server's resident size would stay
at the largest batch's high-water mark for good.
``malloc_trim(0)`` hands free pages back (whole pages inside the heap too, since glibc
2.8), which the next batch takes again in a few milliseconds. Where the C library has no
malloc_trim (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Iterator

import structlog

log = structlog.get_logger(__name__)

# After the response has been written and the request's objects are gone.
TRIM_DELAY = 0.5


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim() -> None:
    if _TRIM is None:
        return
    started = time.perf_counter()
    _TRIM(0)
    log.debug("heap trimmed", ms=round((time.perf_counter() - started) * 1000, 1))


def trim_soon() -> None:
    """Trim once the current request is done (see TRIM_DELAY)."""
    asyncio.get_running_loop().call_later(TRIM_DELAY, trim)


# Pauses in progress in this process, and whether the collector ran before the first
# began: requests pause it from coroutines that overlap without nesting (a batch may end
# while another is still matching), so the last pause to end resumes it, not the first.
_pauses = 0
_resume = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off meanwhile; reference counting frees everything
    as usual. A 10,000-line batch keeps hundreds of thousands of objects alive until it
    ends (its lines, submissions, book, outcomes and answer), in no reference cycle: the
    collector could free none of them, yet its passes would walk them over and over, and
    once more when it resumed with them still alive. Resumed when the last pause of the
    process ends, whether the pauses nest or overlap (two batch requests at once), and
    only if it ran before the first began (paused by someone else: theirs to resume)."""
    global _pauses, _resume
    if _pauses == 0:
        _resume = gc.isenabled()
    _pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0 and _resume:
            gc.enable()
