"""SMART Backend Services: discovery (``.well-known/smart-configuration``) and the token endpoint.

Both answer without a token. The token endpoint speaks OAuth 2.0, not FHIR: its answers
are RFC 6749 JSON (``access_token`` or ``error``), never an OperationOutcome, and never
repeat the client's assertion.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import ALGORITHMS, OAuthError, claimed_client
from gateway.errors import FhirError

from .context import ctx_of, token_url
from .login_throttle import retry_after_seconds
from .negotiation import read_body

router = APIRouter(tags=["SMART"])

#: A token request is a few form fields and one JWT; anything larger is not one.
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FIELDS = ("grant_type", "client_assertion_type", "client_assertion", "scope", "client_id")


async def smart_configuration(request: Request) -> JSONResponse:
    """What a SMART client needs to find and use the token endpoint."""
    return JSONResponse({
        "token_endpoint": token_url(request),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "admin",
                             "ingest:*"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    })


@router.post("/auth/token", summary="SMART Backend Services token endpoint (client_credentials)")
async def token(request: Request) -> JSONResponse:
    """Exchange a signed client assertion for a short-lived access token."""
    ctx = ctx_of(request)
    throttle = ctx.throttle
    limits = throttle.keys(request) if throttle is not None else {}
    try:
        form = await _form(request)
        if throttle is not None:
            limits = throttle.keys(request, claimed_client(form))
            wait = await throttle.wait(limits)
            if wait > 0:
                return _throttled(wait)
        issued = await ctx.write(ctx.tokens.issue, form, token_url(request))
    except OAuthError as exc:
        if throttle is not None:
            await throttle.failed(limits)
        headers = dict(_NO_STORE)
        if exc.status == 401:
            # RFC 6749 5.2 asks a 401 to name a scheme; the client authenticated in the body.
            headers["WWW-Authenticate"] = 'Bearer realm="chw-gateway"'
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)
    return JSONResponse(issued.body, headers=_NO_STORE)


def _throttled(wait: float) -> JSONResponse:
    """429 in the OAuth error form: RFC 6749 has no code for it, and ``temporarily_unavailable``
    (the server cannot take the request for now) is the registered one that says so."""
    seconds = retry_after_seconds(wait)
    body = {"error": "temporarily_unavailable",
            "error_description": f"too many failed token requests from this address or for this client;"
                                 f" retry after {seconds} s"}
    return JSONResponse(body, status_code=429, headers={**_NO_STORE, "Retry-After": str(seconds)})


async def _form(request: Request) -> dict[str, str]:
    """The request's form fields; ``invalid_request`` for anything that is not a plain, small form."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the request as application/x-www-form-urlencoded")
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except FhirError:
        raise OAuthError("invalid_request", f"a token request is at most {MAX_FORM_BYTES} bytes") from None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the request body is not a valid form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in _FIELDS and name in form:
            # RFC 6749 3.2: parameters must not be repeated.
            raise OAuthError("invalid_request", f"{name} is given more than once")
        form[name] = value
    return form
