"""Helpers shared by the FHIR route modules."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Principal
from gateway.errors import FhirError, invalid, not_found
from gateway.fhir import ID_RE, WriteConditions, as_policy_gives, content_as_policy_gives, informational
from gateway.r4 import RESOURCE_TYPES
from gateway.search import MAX_INT_DIGITS
from gateway.store import StoredResource

from .negotiation import fhir_response, prefer


def check_type(rtype: str) -> str:
    """404 for a path segment that is not an R4 resource type."""
    if rtype not in RESOURCE_TYPES:
        raise not_found(f"unknown resource type {rtype[:64]!r}")
    return rtype


def check_path_id(rid: str) -> str:
    """400 for an id FHIR does not allow."""
    if not ID_RE.match(rid):
        raise invalid(f"{rid[:70]!r} is not a valid FHIR id", ["id"])
    return rid


def version_headers(res: StoredResource, base: str | None = None) -> dict[str, str]:
    """ETag, Last-Modified and (for writes) Location of a stored version."""
    headers = {"ETag": res.etag, "Last-Modified": http_date(res.last_updated.timestamp())}
    if base is not None:
        headers["Location"] = f"{base}/{res.type}/{res.id}/_history/{res.version}"
    return headers


def http_date(epoch: float) -> str:
    """An RFC 9110 HTTP date (``Last-Modified``)."""
    return _http_date(int(epoch))


@lru_cache(maxsize=256)
def _http_date(second: int) -> str:
    # Every write answers with its Last-Modified: the writes of one second share it.
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))


def write_response(
    request: Request, res: StoredResource, status: int, media: str, base: str, *, readable: bool = True
) -> Response:
    """Answer a create/update as the ``Prefer: return=`` header asks (default: the resource);
    never with the resource when the client may not read it (``readable``)."""
    headers = version_headers(res, base)
    wanted = prefer(request).get("return", "representation")
    if wanted == "minimal" or (wanted != "OperationOutcome" and not readable):
        return Response(status_code=status, headers=headers)
    if wanted == "OperationOutcome":
        text = f"{res.type}/{res.id} version {res.version} {'created' if status == 201 else 'stored'}"
        return fhir_response(informational(text), status=status, media_type=media, headers=headers)
    return fhir_response(res.content, status=status, media_type=media, headers=headers)


def parse_if_match(request: Request) -> int | None:
    """The version an ``If-Match`` header names."""
    value = request.headers.get("if-match")
    if value is None or value.strip() == "*":
        return None  # "*": any current version (write_conditions)
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_INT_DIGITS:
        raise FhirError('If-Match must be an ETag like W/"3"', status=400, code="invalid", expression=["If-Match"])
    return int(text)


def write_conditions(request: Request) -> WriteConditions | None:
    """A write's ``If-Match: *``, ``If-None-Match`` and (without ``If-Match``) ``If-Unmodified-Since``, which the write
    evaluates against the current version (RFC 9110 13.1.2, 13.1.4); a date that is not an HTTP date
    is ignored, as RFC 9110 asks."""
    none_match = request.headers.get("if-none-match", "").strip() or None
    exists = request.headers.get("if-match", "").strip() == "*"
    unmodified_since = None
    raw = request.headers.get("if-unmodified-since")
    if raw is not None and request.headers.get("if-match") is None:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            when = None
        unmodified_since = when if when is not None and when.tzinfo is not None else None
    if none_match is None and unmodified_since is None and not exists:
        return None
    return WriteConditions(none_match, unmodified_since, exists)


def given_body(principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """A resource as the principal's data policy gives it (``as_policy_gives``)."""
    return as_policy_gives(body, limits_rows=principal.limits_rows, deidentified=principal.deidentified)


def as_given(principal: Principal, content: bytes) -> bytes:
    """A stored resource's JSON as the principal's data policy gives it (``content_as_policy_gives``)."""
    return content_as_policy_gives(content, limits_rows=principal.limits_rows, deidentified=principal.deidentified)
