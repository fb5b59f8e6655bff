"""The gateway's exception tree.

    GatewayError                  anything the gateway reports as an OperationOutcome
    ├── FhirError                 a FHIR interaction that cannot be carried out
    │   (status + issue code: 400 invalid, 401 login, 403 forbidden, 404 not-found,
    │    405 not-supported, 406/415 not-supported, 409/412 conflict, 410 deleted,
    │    413 too-costly, 422 processing)
    └── (mapping, ingest and delivery errors subclass GatewayError in their packages)

Foreign exceptions (pydantic, orjson, database drivers) are translated at the module
that called them, with ``raise … from exc``.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error reported to clients as an OperationOutcome."""

    status: int = 400
    code: str = "invalid"

    def __init__(
        self,
        diagnostics: str,
        *,
        status: int | None = None,
        code: str | None = None,
        expression: list[str] | None = None,
        issues: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.expression = expression
        self.extra_issues = issues or []
        self.headers = headers or {}

    def issues(self) -> list[dict[str, Any]]:
        """The OperationOutcome issues describing this error."""
        if self.extra_issues:
            return self.extra_issues
        issue: dict[str, Any] = {"severity": "error", "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = self.expression
        return [issue]

    def outcome(self) -> dict[str, Any]:
        """This error as an OperationOutcome resource."""
        return {"resourceType": "OperationOutcome", "issue": self.issues()}


class FhirError(GatewayError):
    """A FHIR REST interaction that cannot be carried out."""


def not_found(diagnostics: str) -> FhirError:
    """404 with issue code not-found."""
    return FhirError(diagnostics, status=404, code="not-found")


def gone(diagnostics: str) -> FhirError:
    """410 for a deleted resource."""
    return FhirError(diagnostics, status=410, code="deleted")


def invalid(diagnostics: str, expression: list[str] | None = None, code: str = "invalid") -> FhirError:
    """400 for a malformed request."""
    return FhirError(diagnostics, status=400, code=code, expression=expression)
