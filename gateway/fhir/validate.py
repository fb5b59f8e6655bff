"""Validation of every resource written: strict FHIR JSON rules, the R4B models, the R4 invariants.

Three passes, because none alone is enough:

1. ``check_strict`` (driven by the official R4 JSON schema) rejects what fhir.resources
   lets through: strings for booleans, ``null``, empty arrays, codes outside required
   bindings, malformed primitives. It also covers the R4 types R4B dropped.
2. The fhir.resources R4B models check cardinality and datatype structure: required
   elements, choice types, nesting. They see the resource's canonical instance (every
   primitive replaced by a fixed valid value of its type), because values are the
   strict checker's job and R4B's value patterns are not R4's.
3. The base invariants of the R4 definitions (``gateway.fhir.invariants``), with what
   the shape decides decided once; a failing one is a 422 naming its key.

Both passes are compiled once per resource shape (``gateway.fhir.shapes``): a resource of
a shape seen before is validated by one walk over its values.

What is stored is the client's JSON once both passes accept it, not the model's dump:
the dump rewrites instants (``.123+01:00`` → ``.123000+01:00``) and decimals, and
FHIR requires a server to return what it was given. Since pass 1 only accepts JSON
whose every value already has its canonical JSON type, nothing sloppy gets stored.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import ValidationError

from gateway.errors import FhirError
from gateway.fhir.invariants import InvariantTable, Violation, default_invariants, plan_invariants
from gateway.fhir.outcome import issue, within
from gateway.fhir.reference_targets import check_reference_sites, check_reference_targets, reference_sites
from gateway.fhir.shapes import ShapeCache, ShapePlan, canonical_instance, flatten, leaf_checks
from gateway.fhir.strict import StrictChecker, default_checker
from gateway.r4 import R4_ONLY_TYPES, RESOURCE_TYPES

_MAX_ISSUES = 20


@cache
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


class Validator:
    """Strict checks, models and invariants, compiled once per shape into ``plans``.

    ``invariants`` None leaves the base invariants out (the validator before issue 12,
    which ``bench/validation_cost.py`` measures against).
    """

    def __init__(
        self,
        checker: Callable[[], StrictChecker],
        invariants: Callable[[], InvariantTable] | None,
        plans: ShapeCache,
    ) -> None:
        self._checker = checker
        self._invariants = invariants
        self.plans = plans

    def validate(self, data: dict[str, Any], *, expected_type: str | None = None, where: str = "") -> dict[str, Any]:
        """Validate a resource's JSON; raise a 400/422 ``FhirError`` naming each bad field."""
        rtype = data.get("resourceType")
        if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
            raise FhirError(
                f"unknown resourceType {rtype!r}" if isinstance(rtype, str) else "resourceType is missing",
                status=400,
                code="not-supported" if isinstance(rtype, str) else "required",
                expression=[f"{where}resourceType"],
            )
        if expected_type is not None and rtype != expected_type:
            raise FhirError(
                f"resourceType {rtype} does not match the URL's type {expected_type}",
                status=400,
                code="invalid",
                expression=[f"{where}resourceType"],
            )
        tokens, values = flatten(data)
        plan = self.plans.get(tokens)
        if plan is None or not plan.values_ok(values):
            strict = self._checker().check(data)
            if strict:
                issues = [issue(i.code, i.diagnostics, expression=[within(where, i.expression)])
                          for i in strict[:_MAX_ISSUES]]
                raise FhirError(strict[0].diagnostics, status=400, code=strict[0].code, issues=issues)
            if plan is None:
                plan = self._plan(data, rtype)
                self.plans.put(tokens, plan)
        if plan.model_error is not None:
            raise _model_failure(plan.model_error, rtype, where)
        if plan.invariants is not None:
            violations = plan.invariants.run(data, values)
            if violations:
                raise _invariant_failure(violations, where)
        # R4's allowed target types: the values are judged each time, where they are is the shape's.
        if plan.references is not None:
            check_reference_sites(data, plan.references, where=where)
        else:
            check_reference_targets(data, where=where)
        return data

    def _plan(self, data: dict[str, Any], rtype: str) -> ShapePlan:
        """Compile the plan of a resource the strict checks accepted (see ``gateway.fhir.shapes``)."""
        checker = self._checker()
        error: Exception | None = None
        if rtype not in R4_ONLY_TYPES:
            try:
                _model(rtype).model_validate(canonical_instance(checker, data))
            except (ValidationError, ValueError, TypeError) as exc:  # fhir.resources raises all three
                error = exc
        invariants = None
        if self._invariants is not None and error is None:
            invariants = plan_invariants(checker, self._invariants(), data)
        return ShapePlan(tuple(leaf_checks(checker, data)), error, invariants, reference_sites(data))


def _invariant_failure(violations: list[Violation], where: str) -> FhirError:
    issues = [
        issue("invariant", f"{v.key}: {v.human}", expression=[within(where, v.location)])
        for v in violations[:_MAX_ISSUES]
    ]
    first = violations[0]
    return FhirError(f"{first.key}: {first.human}", status=422, code="invariant", issues=issues)


def _model_failure(exc: Exception, rtype: str, where: str) -> FhirError:
    if isinstance(exc, ValidationError):
        return FhirError(
            "the resource is not valid FHIR R4", status=422, code="processing",
            issues=_pydantic_issues(exc, rtype, where),
        )  # fmt: skip
    return FhirError(
        f"the resource is not valid FHIR R4: {type(exc).__name__}", status=422, code="processing",
        expression=[within(where, rtype)],
    )  # fmt: skip


#: Plans of the shapes seen lately; a few dozen cover a community-care programme's traffic.
_PLANS = ShapeCache(4096)
_DEFAULT = Validator(default_checker, default_invariants, _PLANS)


def validate_resource(data: dict[str, Any], *, expected_type: str | None = None, where: str = "") -> dict[str, Any]:
    """Validate a resource's JSON; raise a 400/422 ``FhirError`` naming each bad field."""
    return _DEFAULT.validate(data, expected_type=expected_type, where=where)


def _pydantic_issues(exc: ValidationError, rtype: str, where: str) -> list[dict[str, Any]]:
    issues = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ISSUES]:
        path = rtype
        for part in error.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = error.get("msg", "invalid value")
        kind = error.get("type", "")
        code = "required" if "missing" in kind else "structure" if "extra" in kind else "value"
        issues.append(issue(code, f"{path}: {message}", expression=[within(where, path)]))
    return issues
