"""Child processes of ``kevin bench`` that end with it.

The bench starts ``kevin serve`` servers, load generators and pgbench. Whatever way the
bench ends — a SIGKILL from a CI timeout included — they must not run on, holding ports,
connections and scratch databases: on Linux each child asks the kernel for a SIGTERM when
the bench dies (``PR_SET_PDEATHSIG``), to which ``kevin serve`` answers with its usual
clean shutdown.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _terminate_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def ask() -> None:  # runs in the child, between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return ask


_ASK = _terminate_with_parent()


async def spawn(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec``, the child sent SIGTERM when this process dies."""
    return await asyncio.create_subprocess_exec(*argv, preexec_fn=_ASK, **kwargs)
