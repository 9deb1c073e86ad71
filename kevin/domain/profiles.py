"""Matching profiles: tolerances two participants agreed for their trades (a standing
agreement between two firms), for one product or for every product (``"*"``).

Pure values, no I/O. Precedence when a trade is matched, most specific first: the pair's
profile for the product, the pair's ``"*"`` profile, the product's rules, exact.
"""

from __future__ import annotations

import re
from datetime import time as clock_time  # a Cutoff has a field named time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from kevin.domain.models import ParticipantName, UtcText
from kevin.domain.tolerances import (
    MAX_BUSINESS_DAYS,
    CalendarName,
    FieldTolerances,
    holiday_calendar,
)

PROFILE_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ProfileName = Annotated[str, StringConstraints(pattern=PROFILE_NAME_PATTERN)]
PRODUCT_PATTERN = r"^[A-Za-z0-9._/-]{1,32}$"
EVERY_PRODUCT = "*"
# A product's name as trades carry it, or "*" for every product of the pair.
ProfileProduct = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9._/-]{1,32})$")]

MatchedCancel = Literal["unilateral", "by_agreement"]

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class Cutoff(BaseModel):
    """When a trade should be matched by: ``time`` in ``timezone`` on the ``business_days``
    -th business day of ``calendar`` after its trade date. Stored with the profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    business_days: int = Field(ge=0, le=MAX_BUSINESS_DAYS, strict=True)
    time: str
    timezone: str
    calendar: CalendarName

    @field_validator("time")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError("time is HH:MM (24-hour)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/London)")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, name: str) -> str:
        holiday_calendar(name)  # raises ValueError naming it
        return name

    def local_time(self) -> clock_time:
        hours, minutes = self.time.split(":")
        return clock_time(int(hours), int(minutes))


class Profile(BaseModel):
    """``PUT /v1/profiles/{name}``: the profile's full content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    participants: tuple[ParticipantName, ParticipantName]
    product: ProfileProduct
    fields: FieldTolerances = FieldTolerances()
    # "by_agreement": a matched trade is cancelled only through an accepted proposal.
    matched_cancel: MatchedCancel = "unilateral"
    cutoff: Cutoff | None = None

    @field_validator("participants")
    @classmethod
    def _a_pair(cls, pair: tuple[str, str]) -> tuple[str, str]:
        if pair[0] == pair[1]:
            raise ValueError("a profile is between two different participants")
        first, second = sorted(pair)
        return first, second  # one spelling per pair: sorted

    @property
    def pair(self) -> tuple[str, str]:
        return self.participants

    def content(self) -> dict[str, Any]:
        """What is stored as the version's body."""
        return self.model_dump(mode="json")


class ProfileVersion(Profile):
    """One stored version of a profile, as ``GET /v1/profiles/{name}`` returns it. A
    retired version (``DELETE``) ends the profile; its content is the last one's."""

    name: str
    version: int
    retired: bool = False
    recorded_at: Annotated[AwareDatetime, UtcText]
    actor: str | None = Field(default=None, exclude=True)

    def profile(self) -> Profile:
        return Profile.model_validate(self.model_dump(include=set(Profile.model_fields)))


class ProfilePage(BaseModel):
    """``GET /v1/profiles``: the live profiles by name, keyset-paginated."""

    profiles: list[ProfileVersion]
    next_cursor: str | None


class DecidedBy(BaseModel):
    """What decided a match or a mismatch: a profile, a product's rules, or (neither in
    force) exact matching. ``name`` is the profile's name or the product; ``version`` the
    version in force (None for exact)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["profile", "product", "exact"]
    name: str | None = None
    version: int | None = None

    @model_validator(mode="after")
    def _named_unless_exact(self) -> DecidedBy:
        if (self.kind == "exact") != (self.name is None and self.version is None):
            raise ValueError("a profile or product's rules have a name and a version; "
                             "exact has neither")
        return self


EXACT_DECISION = DecidedBy(kind="exact")
