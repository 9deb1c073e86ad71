"""A participant's public identity beyond its name: its BIC (ISO 9362), by which standard
messages (SWIFT MT300, FpML) name the parties to a trade."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from kevin.domain.notes import KeyLabel

# SWIFT's field format for a BIC: 4!a2!a2!c[3!c] (institution, country, location, branch).
BIC_PATTERN = r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$"
_BIC = re.compile(BIC_PATTERN)


def bic11(value: str) -> str:
    """The 11-character form: a BIC8 names the head office, whose branch code is XXX."""
    return value if len(value) == 11 else value + "XXX"


def parse_bic(value: str) -> str | None:
    """``value`` as a BIC in its 11-character form, or None when it is no BIC."""
    return bic11(value) if _BIC.fullmatch(value) else None


Bic = Annotated[str, StringConstraints(pattern=BIC_PATTERN), AfterValidator(bic11)]


class ParticipantUpdate(BaseModel):
    """``PUT /v1/participants/{name}``: the participant's BIC (null removes it)."""

    model_config = ConfigDict(extra="forbid")

    bic: Bic | None


class Participant(BaseModel):
    name: str
    bic: str | None


class ParticipantSummary(BaseModel):
    """A participant as the admin lists them: ``GET /v1/participants``."""

    name: str
    bic: str | None
    created_at: datetime


class Participants(BaseModel):
    participants: list[ParticipantSummary]


class ApiKey(BaseModel):
    """One of a participant's API keys, as the admin lists it (never the key itself):
    ``revoked_at`` is null while it is valid; ``last_used_at`` is when a Kevin process
    last found it valid, to the minute (null: not used since it was issued); ``label``
    whom it was issued to, the author of the notes it writes (null: none given)."""

    key_id: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    label: str | None = None


class ApiKeys(BaseModel):
    keys: list[ApiKey]


class ApiKeyCreated(BaseModel):
    """A new key: ``api_key`` is shown this once and stored only as a hash."""

    participant: str
    key_id: str
    api_key: str
    created_at: datetime
    label: str | None = None


class ApiKeyCreate(BaseModel):
    """``POST /v1/participants/{name}/keys`` (a body is optional): whom the key is for."""

    model_config = ConfigDict(extra="forbid")

    label: KeyLabel | None = None
