"""The seam between matching and where trades live: a *book*.

``kevin.engine.matching.Matcher`` decides and writes through a ``Book`` and nothing else,
so live submission and batches (PostgreSQL, kevin.store.book) and replays, what-if runs
and tests (in memory, kevin.domain.memory_book) run the same matcher and cannot drift
apart. tests/test_book_contract.py runs one suite of scenarios against every book.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol
from uuid import UUID

from kevin.domain.matching import TradeRef
from kevin.domain.models import Trade
from kevin.domain.profiles import EVERY_PRODUCT, ProfileVersion
from kevin.domain.rules import EXACT_RULES, Rules
from kevin.domain.tolerances import FieldTolerances
from kevin.domain.versions import DecidedBy, NewVersion

# (product, currency, participant, counterparty, side, trade_date): the resting trades
# one trade can meet all share one segment, the opposite of its own (see ``opposite``).
Segment = tuple[str, str, str, str, str, object]


def segment_of(trade: Trade) -> Segment:
    return (trade.product, trade.currency, trade.participant, trade.counterparty, trade.side,
            trade.trade_date)


def opposite(trade: Trade) -> Segment:
    """The segment holding every counterpart ``trade`` can match or mismatch."""
    return (trade.product, trade.currency, trade.counterparty, trade.participant,
            "buy" if trade.side == "sell" else "sell", trade.trade_date)


@dataclass(frozen=True)
class RulesInForce:
    """The tolerances that decide a trade, and what they come from (recorded with the
    decision)."""

    rules: Rules
    decided_by: DecidedBy

    @property
    def rules_version(self) -> int | None:
        """The product rules version a version records (None: exact, or not product
        rules)."""
        return self.decided_by.version if self.decided_by.kind == "product" else None

    @classmethod
    def exact(cls, product: str) -> RulesInForce:
        return cls(EXACT_RULES, DecidedBy("exact", product, None))

    @classmethod
    def product_rules(cls, product: str, version: int, rules: Rules) -> RulesInForce:
        return cls(rules, DecidedBy("product", product, version))

    @classmethod
    def profile(cls, name: str, version: int, rules: Rules) -> RulesInForce:
        return cls(rules, DecidedBy("profile", name, version))


def choose_in_force(trade: Trade, profiles: Sequence[ProfileVersion],
                    product_rules: RulesInForce) -> RulesInForce:
    """Precedence, most specific first: the pair's profile for the trade's product, the
    pair's ``*`` profile, the product's rules (``product_rules``, exact when none)."""
    pair = tuple(sorted((trade.participant, trade.counterparty)))
    mine = {p.product: p for p in profiles if p.pair == pair and not p.retired}
    found = mine.get(trade.product) or mine.get(EVERY_PRODUCT)
    if found is None:
        return product_rules
    return RulesInForce.profile(found.name, found.version, _rules_of(found.fields))


@lru_cache(maxsize=1024)
def _rules_of(fields: FieldTolerances) -> Rules:
    """A profile's tolerances as rules; built once per distinct profile (a submission
    asks for them on the hot path)."""
    return Rules(fields=fields)


class Book(Protocol):
    """What the matcher reads and writes. Within one matcher's run the book is the
    matcher's alone (a PostgreSQL book holds the match-key locks; an in-memory book has no
    other writer), so every answer is the current state."""

    async def latest(self, trade: TradeRef) -> Trade | None:
        """The latest version of a trade, None if there is none."""
        ...

    async def rules_in_force(self, trade: Trade) -> RulesInForce:
        """The rules that decide ``trade`` (looked up for the trade: its participants and
        its product)."""
        ...

    async def candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        """Resting counterparts of ``trade``, never one of a pair an operator broke, such
        that ``decide(trade, these, rules)`` is what it would be over all of them."""
        ...

    async def candidates_many(self, trades: Sequence[tuple[Trade, Rules]]
                              ) -> list[list[Trade]]:
        """``candidates`` for each trade against the book as it stands now, in order."""
        ...

    async def naming(self, trades: Sequence[Trade]) -> list[Trade]:
        """Latest mismatched trades whose mismatch list names one of ``trades`` (each as
        the counterparty's trade): per trade in the order given, then by (participant,
        trade_id)."""
        ...

    async def append_versions(self, versions: Sequence[NewVersion]) -> list[Trade]:
        """Write each version against the one before it (invariant 3); the written trades
        in the order given. Raises VersionConflict if any was not the latest."""
        ...

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        """An operator broke this pair: it is never a candidate of itself again."""
        ...

    def evaluation(self) -> AbstractAsyncContextManager[None]:
        """The scope of one evaluation. A book that can undo one evaluation alone (a
        savepoint) does so when it raises VersionConflict and says so in
        ``undoes_evaluations``; the matcher then retries it from fresh reads."""
        ...

    @property
    def undoes_evaluations(self) -> bool:
        ...
