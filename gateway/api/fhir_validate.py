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

from gateway.errors import RequestError, invalid
from gateway.fhir import issue, outcome_of, parse_json, require_not_golden, require_visible_before, validate_resource
from gateway.search import SearchAccess
from gateway.store import StoreReads

from .auth import authenticate, require_fhir, search_access
from .context import AppContext, ctx_of
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
    if mode in ("update", "delete"):
        require_fhir(request, rtype, "r")  # the answer says whether the resource is there
    access = search_access(request, principal)
    problems: list[dict[str, Any]] = []
    if rid is not None and mode == "delete":
        policy = access.policy
        current = await ctx.read(lambda: ctx.store.read(rtype, rid, policy=policy))
        problems += await _refusal(ctx, access, rtype, rid, None)
        if current is None or current.deleted:
            problems.append(issue("informational", f"{rtype}/{rid} is not there: a delete would change nothing",
                                  severity="information"))  # fmt: skip
        return fhir_response(outcome_of(_with_verdict(problems, f"{rtype}/{rid} may be deleted")), media_type=media)
    if resource is None:
        raise invalid("$validate needs the resource to check (the body, or a Parameters part named resource)",
                      ["resource"], code="required")  # fmt: skip
    try:
        validate_resource(resource, expected_type=rtype)
        if mode == "update" and resource.get("id") != rid:
            raise invalid(f"an update of {rtype}/{rid} must carry id {rid!r}", ["id"])
    except RequestError as exc:
        problems += exc.issues()
    problems += await _refusal(ctx, access, rtype, rid if mode == "update" else None, resource)
    problems += [issue("not-supported", f"profile {p[:200]!r} was not checked: only the base R4 definitions are",
                       severity="warning", expression=["profile"]) for p in profiles]  # fmt: skip
    return fhir_response(outcome_of(_with_verdict(problems, f"the {rtype} is valid")), media_type=media)


async def _refusal(
    ctx: AppContext, access: SearchAccess, rtype: str, rid: str | None, body: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The issues of the write's own refusals, as the write would give them, in its order: a
    resource the client's data policy hides (before anything is said about it, so not whether it
    is a golden record), a golden record (a Patient tagged golden, or one stored as such); none
    when it would go ahead."""
    try:
        await ctx.read(_refuse_as_the_write, ctx.store, access, rtype, rid, body)
    except RequestError as exc:
        return exc.issues()
    return []


def _refuse_as_the_write(
    store: StoreReads, access: SearchAccess, rtype: str, rid: str | None, body: dict[str, Any] | None
) -> None:
    if rid is not None:
        require_visible_before(store, access, rtype, rid)
    require_not_golden(store, access, rtype, rid, body)


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
