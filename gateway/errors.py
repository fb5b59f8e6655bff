"""The gateway's exception tree, and what each kind of error becomes for clients.

    GatewayError          every error the gateway raises on purpose
    ├── RequestError      what a client sent is wrong or not allowed
    │   └── FhirError     a FHIR REST interaction that cannot be carried out
    ├── MappingError      a source record that cannot be mapped
    ├── ConfigError       settings, config or mapping files that cannot be used
    ├── StoreError        the resource store refused a write
    ├── QueueError        a delivery queue operation failed
    └── ConnectorError    talking to a destination or a pulled source, or shaping data for it, failed

These are the categories; every other error subclasses one of them next to the code that
raises it (``SearchError`` and ``ScopeError`` are request errors, ``MappingLoadError`` a
config error, ``Dhis2Error`` and ``PullError`` connector errors …). ``tests/test_errors.py`` checks that
every exception class of the package is in this tree, and that the drawing above is the
tree this module defines.

``DISPOSITIONS`` is the one table of what an error becomes: the HTTP status and
OperationOutcome issue code the API answers with, and the exit code of the command line.
A class without a row of its own has its nearest ancestor's (``disposition``). Only
``CLIENT_ERRORS`` are answered with their own diagnostics; the others are the gateway's
own failures, which the API answers like a bug: a bare 500 (their messages may name
hosts, files or internals that are no business of the client); a row of status 503 (the
store cannot be reached now) is answered 503 ``transient`` with ``Retry-After``, again
without the message.

A ``FhirError`` raised with an explicit ``status``/``code`` keeps them: FHIR interactions
answer with many statuses (401 login, 403 forbidden, 404 not-found, 405/406/415
not-supported, 409/412 conflict, 410 deleted, 413 too-costly, 422 processing, 503 transient).

Foreign exceptions (pydantic, orjson, database drivers) are translated at the module
that called them, with ``raise … from exc``.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLIENT_ERRORS",
    "DISPOSITIONS",
    "ConfigError",
    "ConnectorError",
    "Disposition",
    "FhirError",
    "GatewayError",
    "MappingError",
    "QueueError",
    "RequestError",
    "StoreError",
    "disposition",
    "exit_code_for",
    "gone",
    "invalid",
    "module_of",
    "not_found",
    "outcome_for",
    "raised_at",
]


@dataclass(frozen=True, slots=True)
class Disposition:
    """What an error becomes: the API's status and issue code, and the command line's exit code."""

    status: int
    code: str
    exit: int


# Keyed by class name, not class: leaves live in modules that import this one. Names are
# unique in the tree (tests/test_errors.py checks it, and that every key names a class).
# Exit codes follow gateway.cli: 1 the command ran but something failed, 2 bad usage or
# configuration. A row outside CLIENT_ERRORS says what the API really answers: 500.
DISPOSITIONS: dict[str, Disposition] = {
    "GatewayError": Disposition(status=500, code="exception", exit=1),
    "RequestError": Disposition(status=400, code="invalid", exit=2),
    "FhirError": Disposition(status=400, code="invalid", exit=1),
    "UnknownDestination": Disposition(status=404, code="not-found", exit=1),
    "UnknownDeadLetter": Disposition(status=404, code="not-found", exit=1),
    "MappingError": Disposition(status=422, code="invalid", exit=1),
    "ConfigError": Disposition(status=500, code="exception", exit=2),
    "StoreError": Disposition(status=500, code="exception", exit=1),
    "StoreUnavailable": Disposition(status=503, code="transient", exit=1),
    "QueueError": Disposition(status=500, code="exception", exit=1),
    "ConnectorError": Disposition(status=500, code="exception", exit=1),
}


def disposition(cls: type[BaseException]) -> Disposition:
    """The row of ``cls`` in ``DISPOSITIONS``, or of its nearest ancestor that has one.

    A foreign exception gets the root's row: to the API and the command line it is as
    unexpected as a gateway error in no category.
    """
    if issubclass(cls, GatewayError):
        for klass in cls.__mro__:
            row = DISPOSITIONS.get(klass.__name__)
            if row is not None:
                return row
    return DISPOSITIONS["GatewayError"]


def outcome_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and OperationOutcome issue code the API answers ``exc`` with."""
    if isinstance(exc, CLIENT_ERRORS):
        return exc.status, exc.code  # a FhirError may carry its own
    row = disposition(type(exc))
    return row.status, row.code


def exit_code_for(exc: BaseException) -> int:
    """The exit code a command ends with when it stops on ``exc``."""
    return disposition(type(exc)).exit


class GatewayError(Exception):
    """Any error the gateway raises on purpose; ``status``/``code`` default to its ``DISPOSITIONS`` row.

    Only ``CLIENT_ERRORS`` render themselves as an OperationOutcome (``outcome()``); the
    ``expression``/``issues``/``headers`` given here are what they render.
    """

    status: int
    code: str

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
        row = disposition(type(self))
        self.diagnostics = diagnostics
        self.status = row.status if status is None else status
        self.code = row.code if code is None else code
        self.expression = expression
        self.extra_issues = issues or []
        self.headers = headers or {}


class RequestError(GatewayError):
    """What a client sent is wrong or not allowed (a request, a search, a scope, an input file)."""

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


class FhirError(RequestError):
    """A FHIR REST interaction that cannot be carried out."""


class MappingError(GatewayError):
    """A source record that cannot be mapped; ``path`` names the field in the record.

    ``code`` is an OperationOutcome issue type (invalid, value, code-invalid, required,
    not-supported, duplicate, too-costly, processing). ``gateway.mapping.errors`` says
    how it is handled.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        code: str = "invalid",
        rule: str | None = None,
        mapping: str | None = None,
    ) -> None:
        super().__init__(f"{path}: {message}", code=code, expression=[path])
        self.path = path
        self.message = message
        self.rule = rule
        self.mapping = mapping
        self.location: str | None = None  # "set: file:line" of the rule, once known
        self.item: str | None = None  # which item of a repeating rule, e.g. "children[1] (key C-2)"

    def in_rule(self, rule: str, mapping: str, location: str | None = None) -> MappingError:
        """Fill in the rule, mapping and ``set: file:line`` that were running (first one wins)."""
        if self.rule is None:
            self.rule = rule
        if self.mapping is None:
            self.mapping = mapping
        if self.location is None:
            self.location = location
        return self

    def at_item(self, item: str, field: str | None = None) -> MappingError:
        """Fill in the repeat item that was being mapped (first one wins) and, when known, the
        field of that item in the record (``children[1].`children/muac```) as a second expression."""
        if self.item is None:
            self.item = item
            if field is not None:
                self.expression = [self.path, field]
        return self

    def __str__(self) -> str:
        where = ""
        if self.mapping is not None:
            where = f"[{self.mapping}" + (f" rule {self.rule}" if self.rule else "")
            where += (f" at {self.location}" if self.location else "") + "] "
        item = f"item {self.item}: " if self.item else ""
        return f"{where}{item}{self.path}: {self.message}"

    def issues(self) -> list[dict[str, Any]]:
        """One issue: the code, the full message, and the record field as expression."""
        expression = self.expression if self.expression and self.expression[0] == self.path else [self.path]
        return [{"severity": "error", "code": self.code, "diagnostics": str(self), "expression": expression}]

    def outcome(self) -> dict[str, Any]:
        """This error as an OperationOutcome resource."""
        return {"resourceType": "OperationOutcome", "issue": self.issues()}


class ConfigError(GatewayError):
    """Settings, a config file, or destination/source/mapping configuration that cannot be used."""


class StoreError(GatewayError):
    """The resource store refused an operation (not a database failure: those are the driver's)."""


class QueueError(GatewayError):
    """A queue operation failed."""


class ConnectorError(GatewayError):
    """A destination connector failed (the destination's answer, or data it cannot take), or a pull did."""


# The categories whose diagnostics are written for the client that caused them.
CLIENT_ERRORS = (RequestError, MappingError)


def not_found(diagnostics: str) -> FhirError:
    """404 with issue code not-found."""
    return FhirError(diagnostics, status=404, code="not-found")


def gone(diagnostics: str) -> FhirError:
    """410 for a deleted resource."""
    return FhirError(diagnostics, status=410, code="deleted")


def invalid(diagnostics: str, expression: list[str] | None = None, code: str = "invalid") -> FhirError:
    """400 for a malformed request."""
    return FhirError(diagnostics, status=400, code=code, expression=expression)


def module_of(filename: str) -> str:
    """The dotted module name of a source file, or its base name when no loaded module has it."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return filename.rsplit("/", 1)[-1]


def raised_at(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``module:line`` (logs name the place, never a path or a message)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    if not frames:
        return "?"
    return f"{module_of(frames[-1].filename)}:{frames[-1].lineno}"
