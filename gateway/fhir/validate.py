"""Validation of every resource written: strict FHIR JSON rules, then the R4B models.

Two passes, because neither alone is enough:

1. ``check_strict`` (driven by the official R4 JSON schema) rejects what fhir.resources
   lets through: strings for booleans, ``null``, empty arrays, codes outside required
   bindings, malformed primitives. It also covers the R4 types R4B dropped.
2. The fhir.resources R4B models check cardinality and datatype structure.

What is stored is the client's JSON once both passes accept it, not the model's dump:
the dump rewrites instants (``.123+01:00`` → ``.123000+01:00``) and decimals, and
FHIR requires a server to return what it was given. Since pass 1 only accepts JSON
whose every value already has its canonical JSON type, nothing sloppy gets stored.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import ValidationError

from gateway.errors import FhirError
from gateway.fhir.outcome import issue
from gateway.fhir.strict import check_strict
from gateway.fhir.types import R4_ONLY_TYPES, RESOURCE_TYPES

_MAX_ISSUES = 20


@cache
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def validate_resource(data: dict[str, Any], *, expected_type: str | None = None, where: str = "") -> dict[str, Any]:
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
    strict = check_strict(data)
    if strict:
        issues = [
            issue(i.code, i.diagnostics, expression=[where + i.expression]) for i in strict[:_MAX_ISSUES]
        ]
        raise FhirError(strict[0].diagnostics, status=400, code=strict[0].code, issues=issues)
    if rtype not in R4_ONLY_TYPES:
        try:
            _model(rtype).model_validate(without_primitive_extensions(data))
        except ValidationError as exc:
            raise FhirError(
                "the resource is not valid FHIR R4",
                status=422,
                code="processing",
                issues=_pydantic_issues(exc, rtype, where),
            ) from exc
        except (ValueError, TypeError) as exc:  # fhir.resources raises these from its own validators
            raise FhirError(
                f"the resource is not valid FHIR R4: {type(exc).__name__}",
                status=422,
                code="processing",
                expression=[f"{where}{rtype}"],
            ) from exc
    return data


def without_primitive_extensions(node: Any) -> Any:
    """A copy without ``_x`` keys, for the models only.

    The R4B models refuse legal primitive extensions on an extension's value
    (``Extension._valueString``); the strict checker has already validated every ``_x``,
    so the models need not see them. Subtrees without any are shared, not copied.
    """
    if isinstance(node, dict):
        out: dict[str, Any] | None = None
        for key, value in node.items():
            if key.startswith("_"):
                out = out if out is not None else dict(node)
                del out[key]
                continue
            if isinstance(value, dict | list):
                cleaned = without_primitive_extensions(value)
                if cleaned is not value:
                    out = out if out is not None else dict(node)
                    out[key] = cleaned
        return node if out is None else out
    if isinstance(node, list):
        items = [without_primitive_extensions(v) for v in node]
        return node if all(a is b for a, b in zip(items, node, strict=True)) else items
    return node


def _pydantic_issues(exc: ValidationError, rtype: str, where: str) -> list[dict[str, Any]]:
    issues = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ISSUES]:
        path = rtype
        for part in error.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = error.get("msg", "invalid value")
        kind = error.get("type", "")
        code = "required" if "missing" in kind else "structure" if "extra" in kind else "value"
        issues.append(issue(code, f"{path}: {message}", expression=[where + path]))
    return issues
