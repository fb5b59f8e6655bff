"""OperationOutcome resources."""

from __future__ import annotations

from typing import Any


def issue(
    code: str,
    diagnostics: str,
    *,
    severity: str = "error",
    expression: list[str] | None = None,
) -> dict[str, Any]:
    """One OperationOutcome issue."""
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = expression
    return item


def operation_outcome(
    code: str, diagnostics: str, *, severity: str = "error", expression: list[str] | None = None
) -> dict[str, Any]:
    """An OperationOutcome with a single issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [issue(code, diagnostics, severity=severity, expression=expression)],
    }


def outcome_of(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome with the given issues."""
    return {"resourceType": "OperationOutcome", "issue": issues}


def informational(diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome reporting success."""
    return operation_outcome("informational", diagnostics, severity="information")


def within(where: str, path: str) -> str:
    """A FHIRPath ``path`` rooted at a resource's type (``Patient.gender``) placed at ``where``
    (``Bundle.entry[0].resource.``), where the type is a filter: ``….resource.ofType(Patient).gender``."""
    if not where:
        return path
    head, dot, rest = path.partition(".")
    if head[:1].isupper() and head.isalnum():
        return f"{where}ofType({head})" + (f".{rest}" if dot else "")
    return where + path
