"""``Patient/$match`` (FHIR R4): which stored Patients may be the person a partner system sends.

Scoped as a Patient search: it finds Patients by demographics, so it needs ``Patient.s`` (a
client that may only read by id must not discover who is stored), and answers only Patients the
client's data policy shows. A client whose policy de-identifies is refused: matching compares
names, identifiers, phones and full birth dates, which it may not search by either.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.errors import FhirError, invalid
from gateway.fhir import parse_json, validate_resource
from gateway.identity import Comparison, Grade, IdentityEngine
from gateway.search import format_instant

from .audit import note_patients
from .auth import require_fhir, row_filter
from .context import base_url, ctx_of
from .fhir_read import shown
from .negotiation import check_content_type, fhir_response, read_body, response_type

router = APIRouter(prefix="/fhir", tags=["FHIR"])

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFAULT_COUNT, MAX_COUNT = 10, 100


@router.post("/Patient/$match", summary="Patient $match")
async def match(request: Request) -> Response:
    """Score the stored Patients against the ``resource`` parameter; a searchset with grades."""
    principal = require_fhir(request, "Patient", "s")
    if principal.deidentified:
        # A grade answers whether a guessed name, identifier or birth date is someone stored here,
        # which is exactly what de-identified reads and searches keep from this client.
        raise FhirError("$match: refused, this client's data policy de-identifies resources and matching"
                        " compares what it strips (names, identifiers, telecoms, birth dates)",
                        status=403, code="forbidden")
    ctx = ctx_of(request)
    engine = ctx.services.identity
    if engine is None:
        # 400, not 501: a 5xx says the server failed, and nothing failed (the operation is switched off)
        raise FhirError("patient matching is not enabled on this server (identity.enabled)", status=400,
                        code="not-supported")
    media = response_type(request)
    check_content_type(request)
    body = parse_json(await read_body(request, ctx.settings.max_body_bytes), max_depth=ctx.settings.max_json_depth)
    resource, only_certain, count = _parameters(body)
    found = await ctx.query(_match, engine, resource, only_certain)
    policy = row_filter(request, principal)
    ids = [pid for pid, _ in found]
    if policy is not None and policy.applies_to("Patient"):
        visible = await ctx.query(ctx.store.visible, policy, "Patient", ids)
        found = [(pid, c) for pid, c in found if pid in visible]
    # ``count`` of what the client may see: cut before the policy's filter, hidden matches took
    # places, and an answer shorter than asked told the client someone hidden matched its guess.
    found = found[:count]
    stored = {res.id: res for res in await ctx.query(ctx.store.read_many, [("Patient", pid) for pid, _ in found])}
    resources = shown(principal, [stored[pid] for pid, _ in found if pid in stored])
    note_patients(request, resources, ctx.settings.audit.max_entities)
    by_id = {res.id: res for res in resources}
    base = base_url(request)
    entries = [
        {
            "fullUrl": f"{base}/Patient/{pid}",
            "resource": orjson.Fragment(by_id[pid].content),
            "search": {
                "extension": [{"url": MATCH_GRADE, "valueCode": comparison.grade.value}],
                "mode": "match",
                "score": _score(engine, comparison),
            },
        }
        for pid, comparison in found
        if pid in by_id
    ]
    bundle = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": format_instant(time.time())},
        "type": "searchset",
        "total": len(entries),
        "entry": entries,
    }
    return fhir_response(jsonio.dumps(bundle), media_type=media)


def _match(engine: IdentityEngine, resource: dict[str, Any], only_certain: bool) -> list[tuple[str, Comparison]]:
    """The matches of the wanted grades, best first (up to MAX_COUNT)."""
    wanted = {Grade.CERTAIN} if only_certain else {Grade.CERTAIN, Grade.PROBABLE, Grade.POSSIBLE}
    return [(pid, c) for pid, c in engine.match(resource, MAX_COUNT) if c.grade in wanted]


def _score(engine: IdentityEngine, comparison: Comparison) -> float:
    """The pair's weight as a 0..1 score: the share of the link threshold reached (1 for a certain match)."""
    if comparison.grade is Grade.CERTAIN:
        return 1.0
    link = engine.rules.thresholds.link
    return round(min(0.99, max(0.0, comparison.score / link)) if link > 0 else 0.5, 3)


def _parameters(body: Any) -> tuple[dict[str, Any], bool, int]:
    """``resource``, ``onlyCertainMatches`` and ``count`` of a Parameters body (400/422 naming the part)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid("$match expects a Parameters resource", ["Parameters"], code="structure")
    resource: dict[str, Any] | None = None
    only_certain, count = False, DEFAULT_COUNT
    for position, part in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{position}]"
        if not isinstance(part, dict):
            raise invalid("a parameter must be an object", [where], code="structure")
        name = part.get("name")
        if name == "resource":
            if not isinstance(part.get("resource"), dict):
                raise invalid("resource must carry a Patient", [f"{where}.resource"], code="required")
            resource = validate_resource(part["resource"], expected_type="Patient")
        elif name == "onlyCertainMatches":
            if not isinstance(part.get("valueBoolean"), bool):
                raise invalid("onlyCertainMatches needs valueBoolean", [f"{where}.valueBoolean"])
            only_certain = part["valueBoolean"]
        elif name == "count":
            value = part.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid("count needs a positive valueInteger", [f"{where}.valueInteger"])
            count = min(value, MAX_COUNT)
        else:
            raise invalid(f"unknown $match parameter {str(name)[:40]!r}", [f"{where}.name"], code="not-supported")
    if resource is None:
        raise invalid("$match needs the resource parameter", ["Parameters.parameter"], code="required")
    return resource, only_certain, count
