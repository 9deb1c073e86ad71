"""Proposals: resolving by agreement between the two participants of a trade."""

from __future__ import annotations

import base64
import binascii
from uuid import UUID

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import (
    authenticate,
    json_response,
    parse_model,
    query_int,
    read_json,
    require_participant,
)
from kevin.domain import errors as e
from kevin.domain.proposals import (
    PROPOSAL_STATES,
    Decision,
    ProposalAnswer,
    ProposalPage,
    ProposalRequest,
)

routes = web.RouteTableDef()


def _proposal_id(request: web.Request) -> UUID:
    """The id in the path; text that is no UUID names no proposal: 404."""
    try:
        return UUID(request.match_info["proposal_id"])
    except ValueError:
        raise e.NotFound(f"no proposal {request.match_info['proposal_id']!r}") from None


@routes.post("/v1/proposals")
async def propose(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    body = parse_model(ProposalRequest, await read_json(request))
    proposal = await request.app[KEVIN].agreements.propose(
        participant, body.trade_id, body.kind, body.counterparty_trade_id, body.comment)
    return json_response(proposal, 201,
                         {"Location": f"/v1/proposals/{proposal.proposal_id}"})


async def _answer(request: web.Request, decision: Decision) -> web.Response:
    principal = await authenticate(request)
    proposal_id = _proposal_id(request)
    comment = None
    if request.can_read_body:
        comment = parse_model(ProposalAnswer, await read_json(request)).comment
    proposal = await request.app[KEVIN].agreements.decide(
        principal.participant, proposal_id, decision, comment)
    return json_response(proposal)


@routes.post("/v1/proposals/{proposal_id}/accept")
async def accept(request: web.Request) -> web.Response:
    return await _answer(request, "accept")


@routes.post("/v1/proposals/{proposal_id}/reject")
async def reject(request: web.Request) -> web.Response:
    return await _answer(request, "reject")


@routes.post("/v1/proposals/{proposal_id}/withdraw")
async def withdraw(request: web.Request) -> web.Response:
    return await _answer(request, "withdraw")


@routes.get("/v1/proposals/{proposal_id}")
async def get_proposal(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    proposal = await request.app[KEVIN].agreements.get_proposal(
        principal.participant, _proposal_id(request))
    return json_response(proposal)


def _after(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise e.ValidationFailed("cursor is not one this service issued",
                                 [{"field": "cursor", "message": "use next_cursor as given"}]
                                 ) from None


@routes.get("/v1/proposals")
async def list_proposals(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    state = request.query.get("state") or None
    if state is not None and state not in PROPOSAL_STATES:
        raise e.ValidationFailed("unknown state", [{"field": "state", "message":
                                                    f"one of {', '.join(PROPOSAL_STATES)}"}])
    page = await request.app[KEVIN].agreements.list_proposals(
        principal.participant, state, _after(request.query.get("cursor")),
        query_int(request, "limit", 100, 1, 1000))
    cursor = (base64.urlsafe_b64encode(page.next_after.bytes).decode().rstrip("=")
              if page.next_after else None)
    return json_response(ProposalPage(proposals=page.proposals, next_cursor=cursor))
