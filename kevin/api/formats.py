"""Standard formats over HTTP: ``POST /v1/trades/import?format=csv|mt300|fpml`` and
``GET /v1/trades/{trade_id}/confirmation?format=mt300|fpml``.

An import is a batch in another notation: each record is turned into the JSON line a
batch would carry and goes through the batch's own validation (kevin.api.batch
.parse_line, with its limits) and engine, with the batch's limits (16 MiB, 10,000
records) and results shape; one bad record spoils no other. Readers and writers live in
kevin.formats.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from kevin import formats, jsoncodec
from kevin.api.app_keys import KEVIN
from kevin.api.batch import parse_line, read_batch_body, results_response
from kevin.api.http import acting_participant, authenticate, require_participant
from kevin.api.trades import trade_id_in_path
from kevin.domain import errors as e
from kevin.domain.models import TradeSubmission
from kevin.engine.batch import MAX_LINES
from kevin.formats import fpml, mt300
from kevin.formats.records import Operation, Record, resolve_counterparties

routes = web.RouteTableDef()

CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "csv": ("text/csv",),
    "mt300": ("text/plain", "application/octet-stream"),
    "fpml": ("application/xml", "text/xml"),
}
CHARSETS = ("", "utf-8", "utf8", "us-ascii")
CONFIRMATIONS = {"mt300": ("text/plain", mt300.render), "fpml": ("application/xml", fpml.render)}


def _format(request: web.Request, allowed: tuple[str, ...]) -> formats.Format:
    kind = request.query.get("format", "")
    if kind not in allowed:
        raise e.ValidationFailed(f"format must be one of {', '.join(allowed)}",
                                 [{"field": "format", "message": f"one of {', '.join(allowed)}"}])
    return cast(formats.Format, kind)


async def _own_bic(request: web.Request, participant: str) -> str:
    bic = (await request.app[KEVIN].bics([participant]))[participant]
    if bic is None:
        raise e.Conflict(f"participant {participant} has no BIC registered; the admin "
                         f"registers it with PUT /v1/participants/{participant}",
                         {"participant": participant})
    return bic


def _invalid(error: dict[str, Any], sources: Any) -> dict[str, Any]:
    """A validation error whose fields also name where in the record they came from."""
    details = error.get("details")
    if sources and isinstance(details, list):
        error = {**error, "details": [
            {**item, "source": sources[root]} if isinstance(item, dict) and (
                root := str(item.get("field", "")).split(".")[0]) in sources else item
            for item in details]}
    return error


def _checked(records: list[Record], participant: str
             ) -> tuple[list[dict[str, Any]], list[tuple[int, Operation, TradeSubmission]]]:
    """The results of records refused before the engine, and the records for it."""
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, Operation, TradeSubmission]] = []
    for record in records:
        if record.error is not None:
            results.append({"line": record.line, "result": "invalid", "trade": None,
                            "error": {"error": record.error.code, "message": record.error.message,
                                      "details": record.error.details}})
            continue
        parsed = parse_line(jsoncodec.dumps(record.body), participant)
        if isinstance(parsed, TradeSubmission):
            valid.append((len(results), record.operation, parsed))
            results.append({"line": record.line, "result": None, "trade": None, "error": None})
        else:
            results.append({"line": record.line, "result": "invalid", "trade": None,
                            "error": _invalid(parsed, record.sources)})
    return results, valid


@routes.post("/v1/trades/import")
async def import_trades(request: web.Request) -> web.Response:
    participant = require_participant(await authenticate(request))
    kind = _format(request, formats.FORMATS)
    accepted = CONTENT_TYPES[kind]
    if request.content_type not in accepted:
        raise e.UnsupportedMediaType(
            f"format={kind} takes Content-Type {' or '.join(accepted)}, "
            f"not {request.content_type or 'none'}")
    if (request.charset or "").lower() not in CHARSETS:
        raise e.UnsupportedMediaType(f"the body must be UTF-8, not {request.charset}")
    own_bic = await _own_bic(request, participant) if kind in formats.BY_BIC else None
    records = formats.read(kind, await read_batch_body(request), own_bic)
    if len(records) > MAX_LINES:
        raise e.PayloadTooLarge(
            f"an import has at most {MAX_LINES} records, not {len(records)}",
            {"max_records": MAX_LINES, "records": len(records)})
    bics = sorted({r.counterparty_bic for r in records if r.counterparty_bic and not r.error})
    if bics:
        directory = await request.app[KEVIN].participants_by_bic(bics)
        records = resolve_counterparties(records, directory, participant)
    results, valid = _checked(records, participant)
    outcomes = await request.app[KEVIN].import_records(
        participant, [(operation, submission) for _, operation, submission in valid])
    return results_response(request, results, [index for index, _, _ in valid], outcomes)


@routes.get("/v1/trades/{trade_id}/confirmation")
async def confirmation(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    kind = _format(request, tuple(CONFIRMATIONS))
    trade = await request.app[KEVIN].get(participant, trade_id_in_path(request))
    bics = await request.app[KEVIN].bics([participant, trade.counterparty])
    ours, theirs = bics[participant], bics[trade.counterparty]
    if ours is None or theirs is None:
        missing = [name for name, bic in bics.items() if bic is None]
        raise e.Conflict(f"no BIC registered for {', '.join(missing)}; the admin registers "
                         "one with PUT /v1/participants/{name}", {"participants": missing})
    content_type, render = CONFIRMATIONS[kind]
    body = render(trade, ours, theirs)
    return web.Response(body=body.encode() if isinstance(body, str) else body,
                        content_type=content_type, charset="utf-8",
                        headers={"ETag": trade.etag})
