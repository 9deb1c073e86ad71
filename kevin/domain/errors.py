"""Domain errors. Each carries a stable ``code`` and typed details; the HTTP layer maps
each class to exactly one status in one table (kevin.api.errors)."""

from __future__ import annotations

from typing import Any


class KevinError(Exception):
    """Kevin could not do what was asked."""

    code = "error"

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)


class NotFound(KevinError):
    """No such trade (or it is not yours)."""

    code = "not_found"


class ParticipantExists(KevinError):
    """A participant with this name already exists."""

    code = "participant_exists"


class ExistsWithDifferentFields(KevinError):
    """A trade with this trade_id already exists with different fields."""

    code = "exists_with_different_fields"

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(
            f"trade_id already used with different {', '.join(fields)}", {"fields": fields}
        )


class VersionConflict(KevinError):
    """The trade has moved on since the version you derived from."""

    code = "version_conflict"

    def __init__(self, current: int, expected: int | None = None) -> None:
        self.current = current
        if expected is None:
            message = f"the current version is {current}"
        elif expected < 0:  # an If-Match that is not an ETag this service issues
            message = (f'If-Match names no version; send the ETag as given ("{current}" is '
                       f"the current version)")
        else:
            message = f"If-Match names version {expected}, but the current version is {current}"
        super().__init__(message, {"current_version": current})


class PreconditionRequired(KevinError):
    """This change needs an If-Match header naming the version it derives from."""

    code = "if_match_required"


class TradeCancelled(KevinError):
    """The trade is cancelled; a cancelled trade cannot change."""

    code = "trade_cancelled"


class Conflict(KevinError):
    """The request conflicts with the current state."""

    code = "conflict"


class ValidationFailed(KevinError):
    """The request is not valid."""

    code = "validation_failed"


class MalformedRequest(KevinError):
    """The request body is not valid JSON."""

    code = "malformed_json"


class Unauthorized(KevinError):
    """A valid API key is required: Authorization: Bearer <key>."""

    code = "unauthorized"


class Forbidden(KevinError):
    """You are not allowed to do this."""

    code = "forbidden"


class PayloadTooLarge(KevinError):
    """The request body is larger than the limit."""

    code = "payload_too_large"


class UnsupportedMediaType(KevinError):
    """The request body must be application/json."""

    code = "unsupported_media_type"


class DatabaseUnavailable(KevinError):
    """The database is unavailable; try again shortly."""

    code = "database_unavailable"


class ArchiveRefused(KevinError):
    """The database refused to archive a version: it was not copied unchanged."""

    code = "archive_refused"


class CannotMatch(KevinError):
    """These trades cannot be matched."""

    code = "cannot_match"


class ProfileClaimed(KevinError):
    """Another live profile already claims this pair of participants and product."""

    code = "profile_claimed"


class ProposalExists(KevinError):
    """A proposal of this kind is already open for these two trades."""

    code = "proposal_exists"


class ProposalNotOpen(KevinError):
    """The proposal is no longer open."""

    code = "proposal_not_open"


class CannotPropose(KevinError):
    """These trades cannot be the subject of this proposal."""

    code = "cannot_propose"


class AgreementRequired(KevinError):
    """A matched trade of this pair is cancelled only by agreement: propose a cancel."""

    code = "agreement_required"
