"""Request bodies to JSON, with the limits a public endpoint needs."""

from __future__ import annotations

from typing import Any

import orjson

from gateway import jsonio
from gateway.errors import FhirError, invalid

_BOM = b"\xef\xbb\xbf"


def parse_json(body: bytes, *, max_depth: int = 64, what: str = "body") -> Any:
    """Parse UTF-8 JSON, refusing bad encodings and excessive nesting with a 400."""
    if body.startswith(_BOM):
        # RFC 8259 lets a parser ignore a byte-order mark; Windows tools write one.
        body = body[len(_BOM) :]
    if not body.strip():
        raise invalid(f"the request {what} is empty", code="required")
    try:
        data = jsonio.loads(body)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "utf-8" in message.lower() or "surrogate" in message.lower():
            raise invalid(f"the request {what} is not valid UTF-8", code="structure") from exc
        raise invalid(f"the request {what} is not valid JSON: {message}", code="structure") from exc
    depth = json_depth(data, max_depth)
    if depth > max_depth:
        raise FhirError(f"the request {what} nests deeper than {max_depth} levels", status=400, code="too-costly")
    return data


def json_depth(data: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting stops once past ``limit``."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    deepest = 0
    while stack:
        value, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return deepest


def require_resource(data: Any, *, what: str = "body") -> dict[str, Any]:
    """Check that parsed JSON is a FHIR resource object."""
    if not isinstance(data, dict):
        raise invalid(f"the request {what} must be a JSON object (a FHIR resource)", code="structure")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str):
        raise invalid("resourceType is missing", ["resourceType"], code="required")
    return data
