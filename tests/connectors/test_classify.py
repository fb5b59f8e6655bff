"""The classification table, row by row."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from gateway.connectors import classify
from gateway.connectors.base import Permanent, Retry, Success
from gateway.connectors.classify import parse_retry_after

NOW = 1_700_000_000.0


def response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    request = httpx.Request(
        "PUT",
        "https://user:pw@shr.example.org/fhir/Patient/1",
        headers={"Authorization": "Bearer s3cret", "Content-Type": "application/fhir+json"},
        content=b'{"resourceType":"Patient"}',
    )
    return httpx.Response(status, headers=headers, content=body, request=request)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_success(status: int) -> None:
    assert isinstance(classify(response(status), now=NOW), Success)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry(status: int) -> None:
    outcome = classify(response(status), now=NOW)
    assert outcome == Retry(delay=None, reason=f"http_{status}")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 412, 422, 301, 302, 100])
def test_other_statuses_are_permanent_with_request_and_response(status: int) -> None:
    outcome = classify(
        response(status, {"Set-Cookie": "a=b"}, b'{"resourceType":"OperationOutcome"}'), now=NOW
    )
    assert isinstance(outcome, Permanent)
    assert outcome.reason == f"http_{status}"
    assert outcome.request is not None and outcome.response is not None
    assert outcome.request.method == "PUT"
    assert outcome.request.url == "https://shr.example.org/fhir/Patient/1"  # no userinfo
    assert outcome.request.headers["authorization"] == "[redacted]"
    assert outcome.request.body == '{"resourceType":"Patient"}'
    assert outcome.response.status == status
    assert outcome.response.headers["set-cookie"] == "[redacted]"
    assert outcome.response.body == '{"resourceType":"OperationOutcome"}'


def test_429_and_503_with_retry_after_throttle_the_destination() -> None:
    assert classify(response(429, {"Retry-After": "7"}), now=NOW) == Retry(7.0, "http_429", throttle=True)
    assert classify(response(503, {"Retry-After": "2"}), now=NOW) == Retry(2.0, "http_503", throttle=True)
    assert classify(response(500, {"Retry-After": "2"}), now=NOW) == Retry(2.0, "http_500", throttle=False)


def test_retry_after_as_http_date_and_garbage() -> None:
    date = email.utils.formatdate(NOW + 120, usegmt=True)
    assert parse_retry_after(date, now=NOW) == 120.0
    assert parse_retry_after(email.utils.formatdate(NOW - 50, usegmt=True), now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("-5", now=NOW) == 0.0
    assert parse_retry_after("999999999", now=NOW) == 86400.0


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx.ConnectTimeout("t"), "timeout"),
        (httpx.ReadTimeout("t"), "timeout"),
        (httpx.PoolTimeout("t"), "timeout"),
        (httpx.ConnectError("refused"), "connection"),
        (httpx.ReadError("reset"), "connection"),
        (httpx.RemoteProtocolError("closed"), "connection"),
    ],
)
def test_transport_errors_retry(exc: Exception, reason: str) -> None:
    assert classify(exc, now=NOW) == Retry(delay=None, reason=reason)


def test_a_bad_url_is_permanent() -> None:
    outcome = classify(httpx.UnsupportedProtocol("ftp"), now=NOW)
    assert isinstance(outcome, Permanent) and outcome.reason == "bad_url"


def test_our_own_bug_is_permanent_with_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        outcome = classify(exc, now=NOW)
    assert isinstance(outcome, Permanent)
    assert outcome.reason == "internal_error"
    assert outcome.detail is not None and "Traceback" in outcome.detail and "KeyError" in outcome.detail
