"""Compiling the rule kinds of ``spec.py`` into resource factories.

A ``RuleProgram`` builds the resources of one rule for one record (or one repeat item),
given the deterministic id(s) the engine computed. It knows nothing about ``when``,
``for_each``, ids, ``meta`` or Provenance: ``engine.py`` does those the same way for every
kind. Adding a rule kind means a model in ``spec.py`` and a ``_compile_<kind>`` here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from gateway.jsonio import DecimalLiteral
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.expressions import Scope
from gateway.mapping.spec import ObservationRule, ReferralRule, ResourceRule, Rule, UnitSpec
from gateway.mapping.templates import MISSING, Builder, TemplateCompiler, copier, copy_json
from gateway.mapping.yamlfile import NodePath

__all__ = [
    "DEFAULTS_KEY",
    "RuleProgram",
    "compile_rule",
    "defaults_reader",
    "fhir_elements",
    "identifier_shape",
]

_OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Task.code for "carry out the focal request" (R4 task-code), a FHIR structural code.
_TASK_FULFILL = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}

Env = dict[str, list[Any]]
#: Where the engine keeps the ``defaults`` values of the current record (evaluated once per
#: record, not once per rule); a name no expression can spell.
DEFAULTS_KEY = " defaults"
#: (record, env, ids by resource type) → resources, each with resourceType and id set.
Factory = Callable[[Any, Env, dict[str, str]], list[dict[str, Any]]]


@dataclass(slots=True)
class RuleProgram:
    """What one compiled rule makes: its resource types (the first one is what ``%name``
    refers to) and a factory."""

    resource_types: tuple[str, ...]
    factory: Factory


@cache
def fhir_elements(resource_type: str) -> frozenset[str] | None:
    """The JSON element names of an R4 resource type, or None if there is no such type."""
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None
    names = {field.alias or name for name, field in model.model_fields.items()}
    return frozenset(name for name in names if name != "fhir_comments") | {"resourceType"}


@cache
def identifier_shape(resource_type: str) -> str | None:
    """``"list"`` or ``"single"`` for the cardinality of ``identifier``; None if absent."""
    model = get_fhir_model_class(resource_type)
    field = model.model_fields.get("identifier")
    if field is None:
        return None
    return "list" if "List" in str(field.annotation) else "single"


def defaults_reader(field: str) -> Builder:
    """A builder returning (a copy of) the record's ``defaults.<field>`` value."""

    def read(record: Any, env: Env) -> Any:
        value = env[DEFAULTS_KEY][0].get(field, MISSING)
        return copy_json(value) if type(value) in (dict, list) else value

    return read


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into ``base`` (objects merge, everything else replaces)."""
    for key, value in extra.items():
        current = base.get(key)
        if type(current) is dict and type(value) is dict:
            merge(current, value)
        else:
            base[key] = value
    return base


class _Compiler:
    def __init__(
        self, templates: TemplateCompiler, defaults: dict[str, Builder], scope: Scope, path: NodePath
    ) -> None:
        self.templates = templates
        self.defaults = defaults
        self.scope = scope
        self.path = path

    def value(self, value: Any, field: str, default_field: str | None = None) -> Builder | None:
        """A builder for a rule field, falling back to ``defaults.<default_field>``."""
        if value is not None:
            return self.templates.template(value, (*self.path, field), self.scope).build
        if default_field is not None:
            return self.defaults.get(default_field)
        return None

    def extras(self, template: dict[str, Any], field: str, resource_type: str) -> Builder | None:
        if not template:
            return None
        allowed = fhir_elements(resource_type) or frozenset()
        for key in template:
            if key not in allowed:
                self.templates.issues.append(((*self.path, field, key), _no_element(resource_type, key, allowed)))
        return self.templates.template(template, (*self.path, field), self.scope).build


def _no_element(resource_type: str, key: str, allowed: frozenset[str]) -> str:
    """The message for a template key the type does not have, with the element it most likely meant."""
    by_case = {name.lower(): name for name in allowed}
    close = [by_case[key.lower()]] if key.lower() in by_case else difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{resource_type} has no element {key!r}{hint}"


def _set(
    out: dict[str, Any], key: str, builder: Builder | None, record: Any, env: Env, *, as_list: bool = False
) -> None:
    if builder is None:
        return
    value = builder(record, env)
    if value is MISSING:
        return
    if as_list and type(value) is not list:
        value = [value]
    out[key] = value


def _apply_extras(out: dict[str, Any], extras: Builder | None, record: Any, env: Env) -> None:
    if extras is None:
        return
    value = extras(record, env)
    if value is not MISSING:
        merge(out, value)


def _compile_resource(rule: ResourceRule, c: _Compiler) -> RuleProgram:
    resource_type = rule.resource_type
    allowed = fhir_elements(resource_type)
    if allowed is None:
        c.templates.issues.append(
            ((*c.path, "resourceType"), f"{resource_type!r} is not an R4 resource type")
        )
    else:
        for key in rule.template:
            if key in ("resourceType", "id", "meta"):
                c.templates.issues.append(((*c.path, "template", key), f"{key} is set by the engine"))
            elif key not in allowed:
                c.templates.issues.append(((*c.path, "template", key), _no_element(resource_type, key, allowed)))
    body = c.templates.template(rule.template, (*c.path, "template"), c.scope).build

    def factory(record: Any, env: Env, ids: dict[str, str]) -> list[dict[str, Any]]:
        out: dict[str, Any] = {"resourceType": resource_type, "id": ids[resource_type]}
        _apply_extras(out, body, record, env)
        return [out]

    return RuleProgram((resource_type,), factory)


_VALUE_KEYS = {
    "quantity": "valueQuantity",
    "integer": "valueInteger",
    "boolean": "valueBoolean",
    "string": "valueString",
    "codeable_concept": "valueCodeableConcept",
    "date_time": "valueDateTime",
}


def _observation_value(
    value: Any, value_type: str | None, unit: UnitSpec | None, path: str
) -> tuple[str, Any]:
    vtype = type(value)
    if value_type is None:
        if vtype is bool:
            value_type = "boolean"
        elif vtype is int:
            value_type = "quantity" if unit is not None else "integer"
        elif vtype is float or vtype is DecimalLiteral:
            value_type = "quantity"
        elif vtype is dict:
            value_type = "quantity" if "value" in value else "codeable_concept"
        else:
            value_type = "string"
    if value_type == "quantity":
        if vtype is dict:
            return "valueQuantity", value
        if vtype not in (int, float, DecimalLiteral):
            raise MappingError(path, f"{quote(value)} is not a number (add | decimal)", code="value")
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity["unit"] = unit.unit or unit.code
            quantity["system"] = unit.system
            quantity["code"] = unit.code
        return "valueQuantity", quantity
    if value_type == "codeable_concept" and vtype is dict and "coding" not in value and "text" not in value:
        return "valueCodeableConcept", {"coding": [value]}  # a Coding from | coding(...); {text} is a concept
    checks = {"integer": int, "boolean": bool, "string": str, "date_time": str, "codeable_concept": dict}
    if vtype is not checks[value_type]:
        raise MappingError(path, f"{quote(value)} does not fit value_type {value_type}", code="value")
    return _VALUE_KEYS[value_type], value


def _compile_observation(rule: ObservationRule, c: _Compiler) -> RuleProgram:
    unit = UnitSpec(code=rule.unit) if isinstance(rule.unit, str) else rule.unit
    categories = [rule.category] if isinstance(rule.category, str) else list(rule.category or [])
    category = [{"coding": [{"system": _OBSERVATION_CATEGORY, "code": code}]} for code in categories]
    fresh_category = copier(category) if category else None
    code = c.value(rule.code, "code")
    value = c.value(rule.value, "value")
    value_path = rule.value if isinstance(rule.value, str) else f"{rule.name}.value"
    subject = c.value(rule.subject, "subject", "subject")
    encounter = c.value(rule.encounter, "encounter", "encounter")
    effective = c.value(rule.effective, "effective", "effective")
    performer = c.value(rule.performer, "performer", "performer")
    extras = c.extras(rule.template, "template", "Observation")
    status, value_type = rule.status, rule.value_type

    def factory(record: Any, env: Env, ids: dict[str, str]) -> list[dict[str, Any]]:
        out: dict[str, Any] = {"resourceType": "Observation", "id": ids["Observation"], "status": status}
        if value is not None:
            observed = value(record, env)
            if observed is MISSING:
                return []  # unanswered question: no Observation
            if type(observed) is list:
                raise MappingError(value_path, f"gives {len(observed)} values; use for_each for one per item")
        if fresh_category is not None:
            out["category"] = fresh_category()
        _set(out, "code", code, record, env)
        if "code" not in out:
            raise MappingError(f"{rule.name}.code", "the Observation code is empty", code="required")
        _set(out, "subject", subject, record, env)
        _set(out, "encounter", encounter, record, env)
        if effective is not None:
            when = effective(record, env)
            if when is not MISSING:
                out["effectivePeriod" if type(when) is dict else "effectiveDateTime"] = when
        _set(out, "performer", performer, record, env, as_list=True)
        if value is not None:
            key, typed = _observation_value(observed, value_type, unit, value_path)
            out[key] = typed
        _apply_extras(out, extras, record, env)
        return [out]

    return RuleProgram(("Observation",), factory)


def _compile_referral(rule: ReferralRule, c: _Compiler) -> RuleProgram:
    code = c.value(rule.code, "code")
    reason = c.value(rule.reason, "reason")
    priority = c.value(rule.priority, "priority")
    facility = c.value(rule.facility, "facility")
    occurrence = c.value(rule.occurrence, "occurrence")
    note = c.value(rule.note, "note")
    subject = c.value(rule.subject, "subject", "subject")
    encounter = c.value(rule.encounter, "encounter", "encounter")
    authored = c.value(rule.authored, "authored", "effective")
    requester = c.value(rule.requester, "requester", "performer")
    extras = c.extras(rule.template, "template", "ServiceRequest")
    task_extras = c.extras(rule.task_template, "task_template", "Task")
    fresh_task_code = copier(_TASK_FULFILL)

    def factory(record: Any, env: Env, ids: dict[str, str]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": ids["ServiceRequest"],
            "status": "active",
            "intent": "order",
        }
        _set(request, "code", code, record, env)
        _set(request, "priority", priority, record, env)
        _set(request, "subject", subject, record, env)
        if "subject" not in request:
            raise MappingError(f"{rule.name}.subject", "a referral needs a subject", code="required")
        _set(request, "encounter", encounter, record, env)
        _set(request, "occurrenceDateTime", occurrence, record, env)
        _set(request, "authoredOn", authored, record, env)
        _set(request, "requester", requester, record, env)
        _set(request, "performer", facility, record, env, as_list=True)
        _set(request, "reasonCode", reason, record, env, as_list=True)
        if note is not None:
            text = note(record, env)
            if text is not MISSING:
                request["note"] = [{"text": text if type(text) is str else str(text)}]
        _apply_extras(request, extras, record, env)
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": ids["Task"],
            "status": "requested",
            "intent": "order",
            "code": fresh_task_code(),
            "focus": {"reference": f"ServiceRequest/{ids['ServiceRequest']}"},
            "for": dict(request["subject"]) if type(request["subject"]) is dict else request["subject"],
        }
        for source, target in (
            ("priority", "priority"),
            ("authoredOn", "authoredOn"),
            ("encounter", "encounter"),
        ):
            if source in request:
                task[target] = request[source] if type(request[source]) is not dict else dict(request[source])
        if "requester" in request:
            task["requester"] = (
                dict(request["requester"]) if type(request["requester"]) is dict else request["requester"]
            )
        if "performer" in request and request["performer"]:
            owner = request["performer"][0]
            task["owner"] = dict(owner) if type(owner) is dict else owner
        _apply_extras(task, task_extras, record, env)
        return [request, task]

    return RuleProgram(("ServiceRequest", "Task"), factory)


def compile_rule(
    rule: Rule, templates: TemplateCompiler, defaults: dict[str, Builder], scope: Scope, path: NodePath
) -> RuleProgram:
    """Compile one rule's body; problems are added to ``templates.issues``."""
    compiler = _Compiler(templates, defaults, scope, path)
    if isinstance(rule, ResourceRule):
        return _compile_resource(rule, compiler)
    if isinstance(rule, ObservationRule):
        return _compile_observation(rule, compiler)
    return _compile_referral(rule, compiler)
