"""A small Server-Sent Events parser (the subset Kevin's feed uses, per the WHATWG spec:
``id``, ``event``, ``data``, ``retry``, comment lines; events end at a blank line)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    id: str | None
    event: str
    data: str


async def events(lines: AsyncIterable[bytes]) -> AsyncIterator[Event | None]:
    """Parse lines (with their line ends) into events; a comment (a heartbeat) yields None
    so a caller can notice that the stream is alive."""
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data:
                yield Event(event_id, name, "\n".join(data))
            name, data = "message", []
            continue
        if line.startswith(":"):
            yield None
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)
