"""The browser's session cookie, accepted beside the Bearer header.

A workbench login (``/ui/login``) stores a session server-side and sets a cookie naming
it. The JSON API and the feed accept that cookie too, so a page's own ``EventSource``
can subscribe and a script sees what the page sees. A cookie is sent by the browser on
its own, so an unsafe method authenticated by it must also carry the session's CSRF
token in ``X-CSRF-Token``, which another site cannot read.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from kevin.api.app_keys import WORKBENCH
from kevin.domain import errors as e
from kevin.engine.workbench import Session

COOKIE = "kevin_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION = web.RequestKey("session", object)  # Session | None, looked up once per request


async def cookie_session(request: web.Request) -> Session | None:
    """The live session named by the request's cookie, or None; looked up once."""
    if _SESSION in request:
        found = request[_SESSION]
        return found if isinstance(found, Session) else None
    token = request.cookies.get(COOKIE)
    found = await request.config_dict[WORKBENCH].session(token) if token else None
    request[_SESSION] = found
    return found


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf_token.encode())


async def api_session(request: web.Request) -> Session:
    """The session a JSON API request without a Bearer header authenticates with."""
    session = await cookie_session(request)
    if session is None:
        raise e.Unauthorized()
    if request.method not in SAFE_METHODS and not csrf_matches(
            session, request.headers.get(CSRF_HEADER)):
        raise e.Forbidden(f"a request authenticated by the session cookie must send "
                          f"the session's CSRF token in {CSRF_HEADER}",
                          {"header": CSRF_HEADER})
    return session
