"""Scope checks for every protected endpoint (the token lookup is ``gateway.auth.Authenticator``)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from gateway.api.audit import note_of
from gateway.api.context import ctx_of
from gateway.api.request_state import principal_of, remember_principal
from gateway.auth import Principal
from gateway.errors import FhirError
from gateway.search import RowFilter, SearchAccess


def authenticate(request: Request) -> Principal:
    """The request's principal (401 when missing or invalid), looked up once per request and
    noted in the request's audit record."""
    principal = principal_of(request.scope)
    if principal is None:
        principal = ctx_of(request).auth.principal(request.headers.get("authorization"))
        remember_principal(request.scope, principal)
    record = note_of(request)
    if record is not None:
        record.client = principal.name
    return principal


def require_fhir(request: Request, rtype: str, letter: str) -> Principal:
    """Authenticate and check a SMART permission letter on a resource type (403 if not allowed)."""
    principal = authenticate(request)
    if not principal.can(rtype, letter):
        if rtype == "AuditEvent":
            raise FhirError("the audit trail is for admin clients to read and search; nobody writes it",
                            status=403, code="forbidden")
        raise FhirError(
            f"the client's scopes do not allow {_VERB[letter]} on {rtype} (needs system/{rtype}.{letter})",
            status=403,
            code="forbidden",
        )
    return principal


def row_filter(request: Request, principal: Principal) -> RowFilter | None:
    """The principal's data policy as the store applies it (None when it limits no rows)."""
    if principal.policy is None or not principal.policy.limits_rows:
        return None
    return RowFilter(principal.policy, ctx_of(request).registry.patient_linked())


def search_access(request: Request, principal: Principal) -> SearchAccess:
    """What the principal may search and see, for every query the server runs for it."""
    return SearchAccess(principal.can, row_filter(request, principal), deidentified=principal.deidentified)


_VERB = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency requiring a non-FHIR scope; ``{name}`` is filled from path parameters."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        needed = scope.format(**request.path_params) if "{" in scope else scope
        if not principal.has(needed):
            raise FhirError(f"this needs the {needed!r} scope", status=403, code="forbidden")
        return principal

    return dependency
