"""Small helpers that keep the handlers thin: auth, body parsing, headers, responses."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from kevin import jsoncodec
from kevin.api.app_keys import ADMIN_TOKEN, KEVIN, KEY_CACHE
from kevin.api.session import COOKIE, api_session
from kevin.domain import errors as e
from kevin.domain import keys
from kevin.domain.keys import KEY_REVOKED_CHANNEL, hash_key
from kevin.domain.models import Instant
from kevin.domain.participants import ApiKey
from kevin.engine.service import IfMatch
from kevin.feed.runtime import FEED

M = TypeVar("M", bound=BaseModel)

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Principal:
    participant: str | None  # None for the admin
    # The hash of the participant's key it authenticated with (directly, or through a
    # workbench session): what it writes is written with that key. None for the admin.
    key_hash: bytes | None = None

    @property
    def is_admin(self) -> bool:
        return self.participant is None


KEY_CACHE_SIZE = 10_000
# A key found valid is taken on trust for this long before it is looked up again: a
# busy client costs no query per request. A revoked key is forgotten at once, by the
# process that revoked it and, told over LISTEN/NOTIFY (forget_revoked_keys), by every
# other; this is the bound when that notification is lost (a listener reconnecting).
KEY_CACHE_SECONDS = keys.REVOKED_EVERYWHERE_WITHIN_S


async def authenticate(request: web.Request) -> Principal:
    """The caller, from its Bearer header, or else from a workbench session cookie
    (kevin.api.session: unsafe methods then need the session's CSRF token too)."""
    if "Authorization" not in request.headers and COOKIE in request.cookies:
        session = await api_session(request)
        return Principal(session.participant,
                         None if session.is_admin else session.credential_hash)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise e.Unauthorized()
    if request.app[ADMIN_TOKEN].accepts(token):
        return Principal(None)
    # Known keys are remembered by hash for a while (KEY_CACHE_SECONDS).
    cache = request.app[KEY_CACHE]
    key_hash = hash_key(token)
    now = time.monotonic()
    cached = cache.get(key_hash)
    if cached is not None and now - cached[1] < KEY_CACHE_SECONDS:
        return Principal(cached[0], key_hash)
    participant = await request.app[KEVIN].participant_for_key(token)
    if participant is None:
        cache.pop(key_hash, None)
        raise e.Unauthorized("the API key is not valid")
    if len(cache) >= KEY_CACHE_SIZE:
        cache.clear()
    cache[key_hash] = (participant, now)
    return Principal(participant, key_hash)


async def revoke_key(request: web.Request, participant: str, key_id: str) -> ApiKey:
    """Revoke the key, and drop it from this process's key cache: this process refuses it
    from the next request, every other as its notification arrives (forget_revoked_keys)."""
    revoked = await request.config_dict[KEVIN].revoke_key(participant, key_id)
    forget_key(request.config_dict[KEY_CACHE], key_id)
    return revoked


def forget_key(cache: dict[bytes, tuple[str, float]], key_id: str) -> None:
    """The key of id ``key_id`` is looked up again at its next use."""
    for key_hash in [h for h in cache if keys.key_id(h) == key_id]:
        del cache[key_hash]


def forget_revoked_keys(app: web.Application) -> None:
    """Every key another process revokes is forgotten here as soon as it is told
    (KEY_REVOKED_CHANNEL, on the feed watch's listening connection); and, each time that
    connection starts listening, every key, since a revocation may have been missed."""
    cache = app[KEY_CACHE]
    app[FEED].watch.listen(KEY_REVOKED_CHANNEL, lambda key_id: forget_key(cache, key_id),
                           cache.clear)


async def require_admin(request: web.Request) -> Principal:
    principal = await authenticate(request)
    if not principal.is_admin:
        raise e.Forbidden("this needs the admin token")
    return principal


def acting_participant(request: web.Request, principal: Principal) -> str:
    """Whose trades a read is about: the caller's own, or ``?participant=`` for the admin."""
    named = query_participant(request)
    if principal.is_admin:
        if not named:
            raise e.ValidationFailed(
                "the admin must name a participant", [{"field": "participant",
                                                       "message": "required for the admin"}])
        return named
    assert principal.participant is not None
    if named and named != principal.participant:
        raise e.NotFound("no such trade")
    return principal.participant


def query_participant(request: web.Request) -> str | None:
    """``?participant=``: None when absent or empty; 422 when it cannot be a name."""
    named = request.query.get("participant") or None
    if named is not None and not _PARTICIPANT.fullmatch(named):
        raise e.ValidationFailed("participant is not a participant name",
                                 [{"field": "participant", "message": "[A-Z0-9_]{1,32}"}])
    return named


_PARTICIPANT = re.compile(r"[A-Z0-9_]{1,32}")


def require_participant(principal: Principal) -> str:
    if principal.participant is None:
        raise e.Forbidden("trades are submitted with a participant's key, not the admin token")
    return principal.participant


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in item["loc"]) or "body",
         "message": item["msg"], "type": item["type"]}
        for item in error.errors(include_url=False, include_input=False)
    ]


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise e.ValidationFailed("the request is not valid", validation_details(error)) from None


async def read_json(request: web.Request) -> Any:
    content_type = request.content_type
    if content_type != "application/json":
        raise e.UnsupportedMediaType(
            f"expected Content-Type application/json, not {content_type or 'none'}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise e.PayloadTooLarge("the request body is larger than 1 MiB") from None
    try:
        return jsoncodec.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise e.MalformedRequest(f"the body is not valid JSON: {error}") from None


async def read_model(request: web.Request, model: type[M]) -> M:
    return parse_model(model, await read_json(request))


def if_match(request: web.Request) -> IfMatch:
    """The version named by If-Match (``"3"``, ``W/"3"`` or ``3``), or ``"*"`` for whatever
    version is current (RFC 9110); -1 when it names no version, so the caller answers 412."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    if raw.strip() == "*":
        return "*"
    # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
    found = _IF_MATCH.fullmatch(raw.strip())
    return int(found.group(1) or found.group(2)) if found else -1


_IF_MATCH = re.compile(r'(?:W/)?(?:"([0-9]{1,18})"|([0-9]{1,18}))')
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII, and small enough for a bigint

# RFC 3339 text with a zone, representable in UTC (kevin.domain.models.Instant).
_INSTANT = TypeAdapter(Instant)
# "?as_of=2026-11-21T10:00:00+01:00" typed into a URL unencoded: the query decoder turns
# the "+" into a space. No RFC 3339 instant has a space before its offset, so it is the
# "+" the user meant.
_PLUS_AS_SPACE = re.compile(r"(?<=[0-9]) ([0-9]{2}:[0-9]{2})$")


def query_instant(request: web.Request, name: str = "as_of") -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        instant = _INSTANT.validate_python(_PLUS_AS_SPACE.sub(r"+\1", raw))
    except ValidationError:
        instant = None
    if instant is None:
        raise e.ValidationFailed(
            f"{name} must be an RFC 3339 timestamp with a zone",
            [{"field": name, "message": "expected e.g. 2026-11-21T10:00:00Z"}])
    return instant


def query_flag(request: web.Request, name: str) -> bool | None:
    """``?name=true|false``; absent or empty: None."""
    value = request.query.get(name) or None
    if value is None:
        return None
    if value not in ("true", "false"):
        raise e.ValidationFailed(f"{name} is true or false",
                                 [{"field": name, "message": "true or false"}])
    return value == "true"


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise e.ValidationFailed(f"{name} must be an integer from {lo} to {hi}",
                                 [{"field": name, "message": f"between {lo} and {hi}"}])
    return int(raw)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="python")
    return web.Response(status=status, body=jsoncodec.dumps(body),
                        content_type="application/json", headers=headers)
