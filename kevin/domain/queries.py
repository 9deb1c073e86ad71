"""What a read of many trades asks for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PageQuery:
    """One page of a participant's trades (every participant's when None), in trade_id
    order after ``after`` (participant, trade_id), as of now or ``as_of``."""

    participant: str | None
    status: str | None = None
    product: str | None = None
    after: tuple[str, str] = ("", "")
    limit: int = 100
    as_of: datetime | None = None
