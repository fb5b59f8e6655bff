"""HTTP details of the FHIR API: media types, Prefer, body limits, responses."""

from __future__ import annotations

import zlib
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.errors import FhirError

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}
_ACCEPTABLE = _JSON_TYPES | {"*/*", "application/*"}
_COMMON_ACCEPT = {"application/fhir+json", "*/*", "application/fhir+json, */*; q=0.1"}
_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


def response_type(request: Request) -> str:
    """Media type to answer with: FHIR JSON unless the client asked only for plain JSON (406 for XML)."""
    if not request.scope["query_string"]:
        accept = request.headers.get("accept")
        if accept is None or accept in _COMMON_ACCEPT:
            return FHIR_JSON
    fmt = request.query_params.get("_format")
    if fmt is not None:
        # An unescaped "+" reads as a space in a query string (_format=application/fhir+json).
        media, *params = fmt.split(";")
        media = media.strip().replace(" ", "+").lower()
        if media not in _FORMATS:
            raise FhirError(f"_format {fmt[:40]!r} is not supported (JSON only)", status=406, code="not-supported")
        if not _r4(params):
            raise FhirError("this server speaks FHIR R4 only (fhirVersion=4.0)", status=406, code="not-supported",
                            expression=["_format"])
        return FHIR_JSON if media != "application/json" else "application/json"
    accept = request.headers.get("accept")
    if not accept:
        return FHIR_JSON
    # q=0 is "not acceptable" (RFC 9110 12.4.2): such a range is no choice.
    parts = [part.split(";") for part in accept.split(",") if not _refused(part)]
    types = [part[0].strip().lower() for part in parts if _r4(part[1:])]
    if any(t in _ACCEPTABLE or t.startswith("text/") for t in types):
        if FHIR_JSON in types or "application/json" not in types:
            return FHIR_JSON
        return "application/json"
    if len(types) < len(parts):
        raise FhirError("this server speaks FHIR R4 only (fhirVersion=4.0)", status=406, code="not-supported")
    raise FhirError("this server answers in FHIR JSON only (application/fhir+json)", status=406,
                    code="not-supported")


def _refused(media_range: str) -> bool:
    """Whether an Accept media range carries ``q=0`` (the client will not take that type)."""
    for param in media_range.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) == 0
            except ValueError:
                return False
    return False


#: The ``fhirVersion`` media type parameter values of R4 (http.html#version-parameter).
_R4_VERSIONS = frozenset({"4.0", "4.0.0", "4.0.1"})


def _r4(params: list[str]) -> bool:
    """Whether a media type's parameters allow FHIR R4 (no ``fhirVersion``, or R4's)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "fhirversion" and value.strip().strip('"') not in _R4_VERSIONS:
            return False
    return True


def check_content_type(request: Request, allowed: set[str] | None = None) -> None:
    """415 unless the body is JSON (a missing Content-Type is taken as JSON)."""
    value = request.headers.get("content-type")
    if value is None:
        return
    media, *params = value.split(";")
    media = media.strip().lower()
    if media not in (allowed or _JSON_TYPES):
        wanted = " or ".join(sorted(allowed)) if allowed else "application/fhir+json"
        raise FhirError(f"Content-Type {media[:60]!r} is not supported; send {wanted}",
                        status=415, code="not-supported")
    if not _r4(params):
        raise FhirError("this server takes FHIR R4 only (fhirVersion=4.0)", status=415, code="not-supported")
    charset = _charset(params)
    if charset is not None and charset not in _UTF8:
        # FHIR (http.html#mime-type) and JSON (RFC 8259 8.1) bodies are UTF-8; read as UTF-8,
        # a body in another charset would be stored wrong or refused with a misleading error.
        raise FhirError(f"charset {charset[:40]!r} is not supported; FHIR JSON bodies are UTF-8",
                        status=415, code="not-supported")


#: Charset names of UTF-8 (US-ASCII text is UTF-8 too).
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii"})


def _charset(params: list[str]) -> str | None:
    """A media type's ``charset`` parameter, lower-cased and unquoted (None: not given)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with a 413 before reading it all."""
    declared = request.headers.get("content-length")
    # ASCII digits only ("²".isdigit() holds) and no int() of an absurdly long number.
    digits = (declared or "").lstrip("0")
    if declared and declared.isascii() and declared.isdigit() and (
        len(digits) > len(str(limit)) or int(digits or "0") > limit
    ):
        raise FhirError(f"the request body is larger than the {limit} byte limit", status=413, code="too-costly")
    encoding = _encoding(request.headers.get("content-encoding"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FhirError(f"the request body is larger than the {limit} byte limit", status=413,
                            code="too-costly")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding is None:
        return body
    if len(body) < _INLINE_INFLATE:
        return _inflate(body, encoding, limit)
    return await anyio.to_thread.run_sync(_inflate, body, encoding, limit)


#: Compressed bodies up to this size are inflated on the event loop (well under a millisecond).
_INLINE_INFLATE = 64 * 1024
#: zlib's window bits for each Content-Encoding taken: gzip, and deflate (zlib-wrapped, RFC 9110 8.4.1.2).
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def _encoding(header: str | None) -> str | None:
    """The one Content-Encoding to undo (None: the body is as sent); 415 for one the gateway cannot."""
    if header is None:
        return None
    codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _WBITS:
        raise FhirError(f"Content-Encoding {header[:40]!r} is not supported; send gzip, deflate or none",
                        status=415, code="not-supported")
    return codings[0]


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body decompressed, never more than ``limit`` bytes of it (413 above: a small body can
    inflate to gigabytes), or 400 when it is not what its Content-Encoding says."""
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(body, limit + 1)
        if not inflater.unconsumed_tail:
            out += inflater.flush()
        if len(out) > limit or inflater.unconsumed_tail:
            raise FhirError(f"the request body inflates to more than the {limit} byte limit", status=413,
                            code="too-costly")
    except zlib.error as exc:
        raise FhirError(f"the request body is not valid {encoding} data", status=400, code="structure") from exc
    if not inflater.eof or inflater.unused_data:
        raise FhirError(f"the request body is not one complete {encoding} stream", status=400, code="structure")
    return out


def prefer(request: Request) -> dict[str, str]:
    """The ``Prefer`` header as a dict (``return``, ``handling``, …)."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            for token in part.split(";"):
                key, _, value = token.strip().partition("=")
                if key:
                    out[key.lower()] = value.strip().strip('"')
    return out


def fhir_response(
    content: bytes | dict[str, Any],
    *,
    status: int = 200,
    media_type: str = FHIR_JSON,
    headers: dict[str, str] | None = None,
) -> Response:
    """A FHIR JSON response from stored bytes or a dict."""
    body = content if isinstance(content, bytes) else jsonio.dumps(content)
    return Response(body, status_code=status, media_type=f"{media_type}; charset=utf-8", headers=headers)
