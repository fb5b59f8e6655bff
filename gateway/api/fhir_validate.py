"""``$validate`` (FHIR R4 Resource-validate): would this resource be accepted, without storing it.

The same checks a create or update makes (strict JSON rules, the R4 models, the base
invariants, Reference target types), answered as an OperationOutcome with 200 whether or not
the resource is valid: a 4xx says the validation itself could not be made (no resource, a
type this server does not know, a mode the URL does not allow). Nothing is stored, read for
another client or sent anywhere.

Scoped as the interaction it stands for: ``create`` (or no mode) needs the type's ``c``;
``update`` and ``delete``, which only the instance URL takes, need ``u`` or ``d`` and ``r``,
since whether the resource exists is part of the answer. A ``profile`` is not checked
against (only the base R4 definitions are known here), and the outcome says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.errors import FhirError, RequestError, invalid
from gateway.fhir import issue, outcome_of, parse_json, validate_resource
from gateway.store import is_golden

from .auth import authenticate, require_fhir, row_filter
from .context import ctx_of
from .fhir_common import check_path_id, check_type
from .negotiation import check_content_type, fhir_response, read_body, response_type

router = APIRouter(prefix="/fhir", tags=["FHIR"])

_MODES = ("create", "update", "delete")
_LETTER = {None: "c", "create": "c", "update": "u", "delete": "d"}


@router.post("/{rtype}/$validate", summary="Validate a resource ($validate)")
async def validate_type(request: Request, rtype: str) -> Response:
    """Check a resource (or a Parameters with ``resource`` and ``mode``) as a create would."""
    return await _validate(request, rtype, None)


@router.post("/{rtype}/{rid}/$validate", summary="Validate a change of a resource ($validate)")
async def validate_instance(request: Request, rtype: str, rid: str) -> Response:
    """Check an update of this resource, or whether it may be deleted (``mode``)."""
    return await _validate(request, rtype, rid)


async def _validate(request: Request, rtype: str, rid: str | None) -> Response:
    authenticate(request)  # 401 before anything is said about the URL
    check_type(rtype)
    if rid is not None:
        check_path_id(rid)
    media = response_type(request)
    ctx = ctx_of(request)
    check_content_type(request)
    body = parse_json(await read_body(request, ctx.settings.max_body_bytes), max_depth=ctx.settings.max_json_depth)
    resource, mode, profiles = _parameters(body, rtype)
    if mode in ("update", "delete") and rid is None:
        raise invalid(f"$validate mode {mode} is for an existing resource: POST {rtype}/[id]/$validate",
                      ["mode"], code="not-supported")  # fmt: skip
    principal = require_fhir(request, rtype, _LETTER[mode])
    problems: list[dict[str, Any]] = []
    if rid is not None and mode in ("update", "delete"):
        require_fhir(request, rtype, "r")
        policy = row_filter(request, principal)
        current = await ctx.read(lambda: ctx.store.read(rtype, rid, policy=policy))
        if current is not None and not current.deleted and is_golden(jsonio.loads(current.content)):
            problems.append(issue("forbidden", f"{rtype}/{rid} is a golden record, written by the gateway's"
                                  " identity matching: a client may not change it"))  # fmt: skip
        if mode == "delete":
            if current is None or current.deleted:
                problems.append(issue("informational", f"{rtype}/{rid} is not there: a delete would change nothing",
                                      severity="information"))  # fmt: skip
            return fhir_response(outcome_of(_with_verdict(problems, f"{rtype}/{rid} may be deleted")),
                                 media_type=media)  # fmt: skip
    if resource is None:
        raise invalid("$validate needs the resource to check (the body, or a Parameters part named resource)",
                      ["resource"], code="required")  # fmt: skip
    try:
        validate_resource(resource, expected_type=rtype)
        if mode == "update" and resource.get("id") != rid:
            raise invalid(f"an update of {rtype}/{rid} must carry id {rid!r}", ["id"])
        if is_golden(resource):
            raise FhirError("a client may not tag a Patient as a golden record (meta.tag urn:chw-gateway:identity|"
                            "golden)", status=403, code="forbidden", expression=[f"{rtype}.meta.tag"])
    except RequestError as exc:
        problems += exc.issues()
    problems += [issue("not-supported", f"profile {p[:200]!r} was not checked: only the base R4 definitions are",
                       severity="warning", expression=["profile"]) for p in profiles]  # fmt: skip
    return fhir_response(outcome_of(_with_verdict(problems, f"the {rtype} is valid")), media_type=media)


def _with_verdict(problems: list[dict[str, Any]], fine: str) -> list[dict[str, Any]]:
    """``problems``, led by ``fine`` as an information issue when none of them is an error."""
    if any(p.get("severity") in ("error", "fatal") for p in problems):
        return problems
    return [issue("informational", fine, severity="information"), *problems]


def _parameters(body: Any, rtype: str) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """The resource, mode and profiles of a ``$validate`` body: the resource itself, or a Parameters."""
    if not isinstance(body, dict):
        raise invalid("the body must be a resource or a Parameters", ["Parameters"], code="structure")
    if body.get("resourceType") != "Parameters" or rtype == "Parameters":
        return body, None, []
    resource: dict[str, Any] | None = None
    mode: str | None = None
    profiles: list[str] = []
    parts = body.get("parameter", [])
    if not isinstance(parts, list):
        raise invalid("Parameters.parameter must be a list", ["Parameters.parameter"], code="structure")
    for n, part in enumerate(parts):
        where = f"Parameters.parameter[{n}]"
        name = part.get("name") if isinstance(part, dict) else None
        if name == "resource" and isinstance(part.get("resource"), dict):
            resource = part["resource"]
        elif name == "mode" and part.get("valueCode") in _MODES:
            mode = part["valueCode"]
        elif name == "profile" and isinstance(part.get("valueUri") or part.get("valueCanonical"), str):
            profiles.append(part.get("valueUri") or part["valueCanonical"])
        else:
            raise invalid(f"$validate takes resource, mode ({', '.join(_MODES)}) and profile; not {str(name)[:40]!r}"
                          " as given", [where], code="not-supported")  # fmt: skip
    return resource, mode, profiles
