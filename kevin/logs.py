"""Structured logs: JSON lines in production, readable console output on a terminal.
Request-scoped values (request_id, …) ride on contextvars, so every line carries them.

No line carries a credential. Two layers, because a secret reaches a log by paths nobody
wrote on purpose (a parser error quoting the header it choked on, an exception's repr
holding a client's request headers, a request id a client chose):

- aiohttp's own reports of a malformed request are rewritten before they are formatted:
  one info line naming the kind of error, never the bytes the client sent, no traceback
  (a malformed request is the client's mistake, not the server's);
- every rendered line, from structlog or stdlib logging alike, is scrubbed last: the
  admin token (as written, and as repr and JSON would escape it), anything shaped like an
  API key, and whatever follows ``Bearer``, ``Authorization:``, ``Cookie:`` or
  ``kevin_session=`` (a workbench session).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.types import EventDict

from kevin.domain.keys import KEY_PREFIX

REDACTED = "[redacted]"


def configure(log_format: str = "json", level: int = logging.INFO, *,
              worker: bool = False, secrets: Iterable[str | None] = ()) -> None:
    """``worker``: a line of one of ``kevin serve --workers`` processes says which (pid).
    ``secrets``: strings no line may carry (the admin token)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if worker:
        shared.append(_add_pid)
    renderer: structlog.types.Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    scrub = Scrubber(secrets)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer, scrub],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that use stdlib logging (aiohttp, alembic) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info, renderer, scrub]))
    handler.addFilter(quiet_malformed_requests)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def quiet_malformed_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it could not parse at level error, with the parser's message
    (which quotes the offending line: an Authorization header, say) and a traceback.
    Keep the fact, at info, and drop the quote."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.msg = "refused a malformed request from %s: %s (%s)"
        record.args = (remote, type(error).__name__, error.code)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


# An API key (kevin.domain.keys.new_key) wherever it appears, even cut short.
_API_KEY = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]+")
# The credential in an Authorization header, or after the Bearer scheme, up to the end of
# the word (a quote, a backslash escape, a comma or a brace ends it too).
_VALUE = r"[^\s'\"\\,}]+"
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization\s*[:=]\s*)(bearer\s+)?" + _VALUE)
_BEARER = re.compile(r"(?i)(\bbearer\s+)" + _VALUE)
# A Cookie header's value, and a workbench session cookie wherever it appears.
_COOKIE = re.compile(r"(?i)(\bcookie\s*[:=]\s*)[^'\"\\\r\n]+|(\bkevin_session=)[^\s;'\"\\,}]+")


class Scrubber:
    """The last processor: takes the rendered line, gives it back without secrets."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms = set()
        for secret in filter(None, secrets):
            forms |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1],
                      json.dumps(repr(secret)[1:-1])[1:-1],
                      repr(secret.encode())[2:-1], json.dumps(repr(secret.encode())[2:-1])[1:-1]}
        # Longest first: a form that contains another is replaced whole.
        self._literals = sorted(forms, key=len, reverse=True)

    def __call__(self, _logger: Any, _method: str, line: Any) -> Any:
        if isinstance(line, bytes):
            return self.scrub(line.decode("utf-8", "replace")).encode()
        return self.scrub(line) if isinstance(line, str) else line

    def scrub(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, REDACTED)
        text = _API_KEY.sub(KEY_PREFIX + REDACTED, text)
        text = _AUTHORIZATION.sub(lambda m: m.group(1) + (m.group(2) or "") + REDACTED, text)
        text = _COOKIE.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)
        return _BEARER.sub(r"\1" + REDACTED, text)


def _add_pid(_logger: Any, _method: str, event: EventDict) -> EventDict:
    event["pid"] = os.getpid()
    return event
