"""Outbound mappings: a referral's Task (and what it references) → what its source app takes back.

A mapping set may hold ``outbound/*.yaml`` files next to its inbound ones. Each turns the
*outcome context* of a referral Task into the payload a return-path connector sends to the
app the referral came from (a CHT report document, a CommCare form with a case update)::

    outbound: cht-referral-outcome
    version: 1.0.0
    when: "task.status != 'requested' or task.businessStatus.coding.code = 'overdue'"
    let:
      status: "{{ task.status }}"
    payload:
      _id: "{{ %outcome_id }}"
      type: data_record
      fields: {patient_uuid: "{{ patient.identifier.where(system = %system + ':doc').value }}"}

The context (the "record" the expressions read) is ``{"task": Task, "request": its
ServiceRequest (Task.focus or basedOn), "patient": Task.for, "outputs": [the resources
Task.output references]}``; absent parts are absent. Variables: ``%system`` (the set's
source system), ``%outcome_id`` (a uuid5 of the Task id, its status and businessStatus code:
the same for every retry of one outcome, different for the next outcome, so the destination
can refuse a repeat) and the file's ``let`` values. The first file (in name order) whose
``when`` holds makes the payload; when none does, nothing is sent for that change.

Golden tests live in ``<set>/outbound/tests/<case>.input.json`` (a context) and
``<case>.expected.json`` (the payload, or ``null`` for "nothing sent"); ``gateway mappings
test`` runs them with the inbound ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from gateway import jsonio
from gateway.mapping.conceptmaps import ConceptTable
from gateway.mapping.converters import CompileContext
from gateway.mapping.errors import LoadIssue, MappingError
from gateway.mapping.expressions import Expression, Scope
from gateway.mapping.ids import entity_id
from gateway.mapping.templates import MISSING, Builder, TemplateCompiler
from gateway.mapping.yamlfile import YamlSyntaxError, format_path, read_yaml

__all__ = ["OUTBOUND_DIR", "OutboundMapping", "outcome_id", "render_outcome"]

OUTBOUND_DIR = "outbound"
_BUILTINS = frozenset({"system", "outcome_id"})


class OutboundSpec(BaseModel):
    """One ``outbound/*.yaml`` file."""

    model_config = ConfigDict(extra="forbid")

    outbound: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: str
    description: str = ""
    when: str | None = None
    let: dict[str, Any] = {}
    payload: dict[str, Any]


@dataclass(slots=True)
class OutboundMapping:
    """A compiled outbound file: ``render`` makes the payload of one outcome, or None."""

    name: str
    version: str
    file: str
    system: str
    when: Expression | None
    lets: list[tuple[str, Builder]]
    payload: Builder

    def render(self, context: dict[str, Any]) -> dict[str, Any] | None:
        """The payload for ``context`` (None when ``when`` is false); raises ``MappingError``."""
        env: dict[str, list[Any]] = {"system": [self.system], "outcome_id": [outcome_id(self.system, context)]}
        try:
            if self.when is not None and self.when.run(context, env) != [True]:
                return None
            for name, builder in self.lets:
                value = builder(context, env)
                env[name] = [] if value is MISSING else [value]
            built = self.payload(context, env)
        except MappingError as exc:
            raise MappingError(f"{self.file}: {exc.path}", exc.message, code=exc.code) from None
        return None if built is MISSING else dict(built)


def outcome_id(system: str, context: dict[str, Any]) -> str:
    """The deterministic id of one outcome of a Task: its id, status and businessStatus code."""
    task = context.get("task") or {}
    codings = (task.get("businessStatus") or {}).get("coding") or [{}]
    business = codings[0].get("code", "") if isinstance(codings[0], dict) else ""
    return entity_id(system, "referral-outcome", f"{task.get('id', '')}|{task.get('status', '')}|{business}")


def render_outcome(mappings: list[OutboundMapping], context: dict[str, Any]) -> dict[str, Any] | None:
    """The payload of the first mapping whose ``when`` holds (None: nothing to send)."""
    for mapping in mappings:
        payload = mapping.render(context)
        if payload is not None:
            return payload
    return None


def load_outbound(
    folder: Path, system: str, tables: dict[str, ConceptTable], issues: list[LoadIssue], *, interpret: bool = False
) -> list[OutboundMapping]:
    """Compile ``<set>/outbound/*.yaml`` in name order; problems go to ``issues`` with file and line."""
    directory = folder / OUTBOUND_DIR
    if not directory.is_dir():
        return []
    compiled: list[OutboundMapping] = []
    for path in sorted(directory.glob("*.yaml")):
        mapping = _load_file(path, system, tables, issues, interpret)
        if mapping is not None:
            compiled.append(mapping)
    return compiled


def _load_file(
    path: Path, system: str, tables: dict[str, ConceptTable], issues: list[LoadIssue], interpret: bool
) -> OutboundMapping | None:
    file = str(path)
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        issues.append(LoadIssue(file, exc.line, "", exc.message))
        return None
    try:
        spec = OutboundSpec.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            where = doc.data_path(error["loc"])
            message = "unknown field (check the spelling)" if error["type"] == "extra_forbidden" else error["msg"]
            issues.append(LoadIssue(file, doc.line_of(where), format_path(where), message))
        return None
    ctx = CompileContext(system=system, tables=tables, constants={"system": [system]})
    compiler = TemplateCompiler(ctx, interpret=interpret)
    visible = set(_BUILTINS)
    when = compiler.expression(spec.when, ("when",), Scope(frozenset(visible), "when sees built-ins only")) \
        if spec.when is not None else None  # fmt: skip
    lets: list[tuple[str, Builder]] = []
    for name, value in spec.let.items():
        if name in _BUILTINS:
            compiler.issues.append((("let", name), f"%{name} is reserved; choose another name"))
        scope = Scope(frozenset(visible), "a let sees built-ins and earlier lets")
        lets.append((name, compiler.template(value, ("let", name), scope).build))
        visible.add(name)
    body_scope = Scope(frozenset(visible), "payload sees built-ins and lets")
    payload = compiler.template(spec.payload, ("payload",), body_scope)
    for node_path, message in compiler.issues:
        issues.append(LoadIssue(file, doc.line_of(node_path), format_path(node_path), message))
    if compiler.issues:
        return None
    return OutboundMapping(spec.outbound, spec.version, file, system, when, lets, payload.build)


def read_context(path: Path) -> dict[str, Any]:
    """A golden input: an outcome context (a JSON object with ``task`` …)."""
    value = jsonio.loads(path.read_bytes())
    if not isinstance(value, dict) or not isinstance(value.get("task"), dict):
        raise ValueError(f"{path.name}: an outbound input is a JSON object with a 'task' resource")
    return value
