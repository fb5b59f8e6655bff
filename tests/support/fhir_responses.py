"""Response oracles applied to every FHIR response a black-box test receives.

* an error status (4xx/5xx) carries an OperationOutcome as ``application/fhir+json``;
* every JSON body that is a resource validates against the R4 JSON schema;
* nothing is a 5xx.

Install them on an httpx client as a response hook (``oracle_hooks()``) so that no
test can forget them; a violation fails the request that caused it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.support.schema_oracle import default_oracle

FHIR_JSON = "application/fhir+json"


class ResponseViolation(AssertionError):
    """A response broke one of the cross-cutting FHIR rules."""


def _where(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url} -> {response.status_code}"


def check_response(response: httpx.Response, *, allow_5xx: bool = False) -> Any:
    """Apply the oracles to a read response; return its parsed JSON body (None when empty)."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    body: Any = None
    if response.content:
        if media in (FHIR_JSON, "application/json"):
            try:
                body = json.loads(response.content)
            except ValueError as exc:
                raise ResponseViolation(f"{_where(response)}: body is not JSON") from exc
    if response.status_code >= 500 and not allow_5xx:
        raise ResponseViolation(f"{_where(response)}: server error: {response.text[:500]}")
    if response.status_code >= 400:
        if media != FHIR_JSON:
            raise ResponseViolation(f"{_where(response)}: error Content-Type is {media!r}, not {FHIR_JSON}")
        issues = body.get("issue") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome" or not issues:
            raise ResponseViolation(f"{_where(response)}: error body is not an OperationOutcome")
        if not all(isinstance(i, dict) and i.get("severity") and i.get("code") for i in issues):
            raise ResponseViolation(f"{_where(response)}: OperationOutcome issue without severity/code")
    if isinstance(body, dict) and "resourceType" in body:
        errors = default_oracle().errors(body)
        if errors:
            raise ResponseViolation(f"{_where(response)}: R4 JSON schema: {'; '.join(errors[:5])}")
    return body


def oracle_hook() -> Callable[[httpx.Response], None]:
    """A sync httpx response hook running ``check_response``."""

    def hook(response: httpx.Response) -> None:
        response.read()
        check_response(response)

    return hook


def async_oracle_hook() -> Callable[[httpx.Response], Awaitable[None]]:
    """An async httpx response hook running ``check_response``."""

    async def hook(response: httpx.Response) -> None:
        await response.aread()
        check_response(response)

    return hook
