"""DHIS2 ``WebMessage`` bodies: the envelope of every non-report answer of the Web API."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["STATUS_TEXT", "web_message", "web_message_body"]

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def web_message_body(
    code: int,
    message: str | None,
    *,
    status: str | None = None,
    error_code: str | None = None,
    response: dict[str, Any] | None = None,
    dev_message: str | None = None,
) -> dict[str, Any]:
    """``{httpStatus, httpStatusCode, status, message[, devMessage][, errorCode][, response]}``."""
    body: dict[str, Any] = {
        "httpStatus": STATUS_TEXT.get(code, str(code)),
        "httpStatusCode": code,
        "status": status or ("OK" if code < 400 else "ERROR"),
    }
    if message is not None:
        body["message"] = message
    if dev_message is not None:
        body["devMessage"] = dev_message
    if error_code is not None:
        body["errorCode"] = error_code
    if response is not None:
        body["response"] = response
    return body


def web_message(
    code: int,
    message: str | None,
    *,
    status: str | None = None,
    error_code: str | None = None,
    response: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A WebMessage as a JSON response with the matching HTTP status."""
    body = web_message_body(code, message, status=status, error_code=error_code, response=response)
    return JSONResponse(body, status_code=code, headers=headers)
