"""What an HTTP response or a raised exception means for a delivery: one pure function.

| result                                         | outcome                          |
| ---------------------------------------------- | -------------------------------- |
| 2xx                                            | Success                          |
| 408 Request Timeout                            | Retry (the server gave up on us) |
| 425 Too Early                                  | Retry (replay protection, later) |
| 429 Too Many Requests                          | Retry, honouring Retry-After     |
| 5xx (500, 502, 503, 504, ...)                  | Retry, honouring Retry-After     |
| any other 4xx (400, 401, 403, 404, 409, 422..) | Permanent: dead letter, with the |
|                                                | request and response kept        |
| 1xx / 3xx (we never follow redirects)          | Permanent: a misconfigured URL   |
| httpx.TimeoutException (connect/read/write/pool)| Retry                           |
| httpx.TransportError (connect refused, reset,  | Retry                            |
| protocol error, proxy error)                   |                                  |
| httpx.UnsupportedProtocol, httpx.InvalidURL    | Permanent: configuration error   |
| StoreUnavailable (the gateway's own store down)| Retry (``store_unavailable``)    |
| any other exception (a bug in our code)        | Permanent with the traceback:    |
|                                                | never a silent retry loop        |

401 and 403 are permanent on purpose: retrying with the same credentials cannot succeed,
and dead letters make the misconfiguration visible; after fixing the credentials an
operator replays them. 404 is permanent too (a wrong base URL should be fixed, not
retried for a month); connectors that expect 404 (DELETE of something already gone)
treat it as success before calling ``classify``.
"""

from __future__ import annotations

import email.utils
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import overload

import httpx

from gateway.connectors.base import (
    DeliveryOutcome,
    Partial,
    Permanent,
    RecordedRequest,
    RecordedResponse,
    Retry,
    Success,
)
from gateway.store import StoreUnavailable

# Retryable 4xx codes, with why each is not the payload's fault.
RETRYABLE_4XX: tuple[int, ...] = (
    408,  # Request Timeout: the server closed an idle or slow request; resending is safe
    425,  # Too Early: the server refuses a possibly-replayed request for now
    429,  # Too Many Requests: rate limited; wait at least Retry-After
)

# Statuses whose Retry-After we honour as a destination-wide "slow down".
THROTTLING_STATUSES: tuple[int, ...] = (429, 503)

MAX_RETRY_AFTER = 24 * 3600.0  # a Retry-After beyond a day is treated as a day
MAX_RECORDED_BODY = 64 * 1024  # characters of a request/response body kept with a dead letter

# Header names never kept with a dead letter (credentials and session state).
REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "apikey"}
)


def classify(result: httpx.Response | BaseException, *, now: float) -> DeliveryOutcome:
    """Map a response or an exception to Success / Retry / Permanent (see the table above)."""
    if isinstance(result, BaseException):
        return _classify_exception(result)
    status = result.status_code
    if 200 <= status < 300:
        return Success()
    if status in RETRYABLE_4XX or 500 <= status < 600:
        delay = parse_retry_after(result.headers.get("retry-after"), now=now)
        throttle = delay is not None and status in THROTTLING_STATUSES
        return Retry(delay=delay, reason=f"http_{status}", throttle=throttle)
    return Permanent(
        reason=f"http_{status}",
        request=record_request(result.request) if _has_request(result) else None,
        response=record_response(result),
    )


def _classify_exception(exc: BaseException) -> DeliveryOutcome:
    if isinstance(exc, httpx.TimeoutException):
        return Retry(delay=None, reason="timeout")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Permanent(reason="bad_url", detail=f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.TransportError):
        return Retry(delay=None, reason="connection")
    if isinstance(exc, StoreUnavailable):  # the gateway's own store is down for a while, not a bug
        return Retry(delay=None, reason="store_unavailable", link_ok=True)
    return Permanent(reason="internal_error", detail=format_traceback(exc))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, for a dead letter's detail."""
    return "".join(traceback.format_exception(exc)).strip()


def record_request(request: httpx.Request) -> RecordedRequest:
    """Keep a request for a dead letter, without credentials."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = b""
    return RecordedRequest(
        method=request.method,
        url=str(request.url.copy_with(username=None, password=None)),
        headers=_safe_headers(request.headers),
        body=_text(body),
    )


def record_response(response: httpx.Response) -> RecordedResponse:
    """Keep a response for a dead letter, without cookies."""
    try:
        body = response.content
    except httpx.ResponseNotRead:
        body = b""
    return RecordedResponse(
        status=response.status_code, headers=_safe_headers(response.headers), body=_text(body)
    )


def _has_request(response: httpx.Response) -> bool:
    try:
        response.request  # noqa: B018 - raises when the response was built without one
    except RuntimeError:
        return False
    return True


def _safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name.lower(): ("[redacted]" if name.lower() in REDACTED_HEADERS else value)
        for name, value in headers.items()
    }


def _text(body: bytes) -> str:
    return body[: MAX_RECORDED_BODY * 4].decode("utf-8", errors="replace")[:MAX_RECORDED_BODY]


@dataclass(frozen=True, slots=True)
class Redaction:
    """A destination's own credentials, to be removed from whatever is kept of its requests and answers.

    ``REDACTED_HEADERS`` cover the usual names; a destination may send its secret in a
    header of its choosing (``auth.header``), and one that echoes requests puts the secret
    into its answer's body, so each kept request and response is scrubbed with these too.
    """

    headers: frozenset[str] = frozenset()  # lower-case header names
    secrets: tuple[str, ...] = ()  # values replaced by ``***`` in kept headers, bodies, URLs and details

    def scrub(self, outcome: DeliveryOutcome) -> DeliveryOutcome:
        """``outcome`` with these credentials removed from what a dead letter keeps."""
        if not (self.headers or self.secrets):
            return outcome
        if isinstance(outcome, Permanent):
            return replace(outcome, request=self._request(outcome.request), response=self._response(outcome.response),
                           detail=self._text(outcome.detail))
        if isinstance(outcome, Partial):
            parts = tuple(
                replace(part, request=self._request(part.request), response=self._response(part.response),
                        detail=self._text(part.detail))
                for part in outcome.refused
            )
            return replace(outcome, refused=parts, detail=self._text(outcome.detail))
        return outcome

    def _request(self, request: RecordedRequest | None) -> RecordedRequest | None:
        if request is None:
            return None
        return replace(request, url=self._text(request.url), headers=self._headers(request.headers),
                       body=self._text(request.body))

    def _response(self, response: RecordedResponse | None) -> RecordedResponse | None:
        if response is None:
            return None
        return replace(response, headers=self._headers(response.headers), body=self._text(response.body))

    def _headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            name: "[redacted]" if name.lower() in self.headers else self._text(value)
            for name, value in headers.items()
        }

    @overload
    def _text(self, text: str) -> str: ...
    @overload
    def _text(self, text: None) -> None: ...
    def _text(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
