"""Code tables: FHIR R4 ConceptMaps (written in YAML or JSON) under ``mappings/conceptmaps/``.

Integrators keep every local-code → LOINC / SNOMED CT / ICD-10 / FHIR-code translation in
these files, so no code list lives in Python and the tables can also be loaded into a FHIR
server as they are. A table is referenced by its ``id`` from converters such as
``| concept('danger-signs')``.

Lookup semantics for a source code (``ConceptTable.lookup``):

* each ``group`` whose ``element`` lists the code contributes its targets, in file order
  (so one code can yield a SNOMED CT *and* an ICD-10 coding);
* a target with equivalence ``unmatched`` or ``disjoint`` contributes nothing: that is how a
  table says "this answer means no code" (e.g. ``none`` in a danger-sign list);
* a group that does not list the code contributes its ``unmapped`` default when it has
  one (mode ``fixed``: that code; mode ``provided``: the source code itself);
* a code no group knows is an error (``MappingError`` with code ``code-invalid``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pydantic
from fhir.resources.R4B import get_fhir_model_class

from gateway import jsonio
from gateway.fhir import check_strict
from gateway.mapping.errors import LoadIssue
from gateway.mapping.yamlfile import YamlDocument, YamlSyntaxError, format_path, read_yaml

__all__ = ["ConceptTable", "load_concept_tables"]

Coding = dict[str, str]
_NO_MATCH = frozenset({"unmatched", "disjoint"})


@dataclass(frozen=True, slots=True)
class _Group:
    target: str | None
    source: str | None
    elements: dict[str, tuple[Coding, ...]]
    unmapped_mode: str | None
    unmapped_code: str | None
    unmapped_display: str | None


class ConceptTable:
    """One ConceptMap compiled into dictionaries for constant-time lookups."""

    def __init__(self, table_id: str, url: str | None, groups: list[_Group], texts: dict[str, str]) -> None:
        self.id = table_id
        self.url = url
        self._groups = groups
        self._texts = texts
        self._cache: dict[str, tuple[Coding, ...] | None] = {}
        self.source_codes = frozenset(code for group in groups for code in group.elements)

    def lookup(self, code: str) -> tuple[Coding, ...] | None:
        """Target codings for a source code; ``()`` if deliberately unmapped, None if unknown.

        The returned dicts are shared: callers copy them before putting them in output.
        """
        try:
            return self._cache[code]
        except KeyError:
            pass
        found = False
        codings: list[Coding] = []
        for group in self._groups:
            targets = group.elements.get(code)
            if targets is not None:
                found = True
                codings.extend(targets)
            elif group.unmapped_mode == "fixed" and group.unmapped_code is not None:
                found = True
                codings.append(_coding(group.target, group.unmapped_code, group.unmapped_display))
            elif group.unmapped_mode == "provided":
                found = True
                codings.append(_coding(group.target or group.source, code, None))
        result = tuple(codings) if found else None
        if len(self._cache) < 10_000:  # bounded: "provided" tables see arbitrary input codes
            self._cache[code] = result
        return result

    def text(self, code: str) -> str | None:
        """The source display of a code (``element.display``), if the table gives one."""
        return self._texts.get(code)


def _coding(system: str | None, code: str, display: str | None) -> Coding:
    coding: Coding = {}
    if system:
        coding["system"] = system
    coding["code"] = code
    if display:
        coding["display"] = display
    return coding


def load_concept_tables(folder: Path, issues: list[LoadIssue]) -> dict[str, ConceptTable]:
    """Load every ``*.yaml``/``*.json`` ConceptMap in ``folder``; problems go to ``issues``."""
    tables: dict[str, ConceptTable] = {}
    if not folder.is_dir():
        return tables
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")]):
        table = _load_one(path, issues)
        if table is None:
            continue
        if table.id in tables:
            issues.append(LoadIssue(str(path), 1, "id", f"ConceptMap id {table.id!r} is used twice"))
            continue
        tables[table.id] = table
    return tables


def _read(path: Path) -> YamlDocument:
    if path.suffix == ".json":
        try:
            return YamlDocument(jsonio.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise YamlSyntaxError(0, f"invalid JSON: {exc}") from exc
    return read_yaml(path)


_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")


def _load_one(path: Path, issues: list[LoadIssue]) -> ConceptTable | None:
    try:
        doc = _read(path)
    except YamlSyntaxError as exc:
        issues.append(LoadIssue(str(path), exc.line, "", exc.message))
        return None
    data = doc.data
    if not isinstance(data, dict) or data.get("resourceType") != "ConceptMap":
        issues.append(LoadIssue(str(path), 1, "", "not a ConceptMap (resourceType: ConceptMap is required)"))
        return None
    _codes_as_strings(data)
    strict = check_strict(data)
    for issue in strict:
        where = _expression_path(issue.expression)
        issues.append(LoadIssue(str(path), doc.line_of(where), format_path(where), issue.diagnostics))
    if strict:
        return None
    try:
        get_fhir_model_class("ConceptMap").model_validate(data)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            where = doc.data_path(error["loc"])
            issues.append(LoadIssue(str(path), doc.line_of(where), format_path(where), error["msg"]))
        return None
    table_id = data.get("id")
    if not isinstance(table_id, str):
        issues.append(LoadIssue(str(path), 1, "id", "a ConceptMap used by mappings needs an id"))
        return None
    groups: list[_Group] = []
    texts: dict[str, str] = {}
    ok = True
    for g_index, group in enumerate(data.get("group") or []):
        for side in ("source", "target"):  # they become Coding.system: an absolute URI
            system = group.get(side)
            if isinstance(system, str) and not _ABSOLUTE_URI.match(system):
                where = ("group", g_index, side)
                issues.append(
                    LoadIssue(
                        str(path), doc.line_of(where), format_path(where),
                        f"{system!r} is not an absolute URI (the code system's URL, e.g. http://snomed.info/sct, "
                        "http://loinc.org, or urn:...)",
                    )
                )
                ok = False
        elements: dict[str, tuple[Coding, ...]] = {}
        for e_index, element in enumerate(group.get("element") or []):
            code = element.get("code")
            where = ("group", g_index, "element", e_index)
            if not code:
                issues.append(
                    LoadIssue(str(path), doc.line_of(where), format_path(where), "code is required")
                )
                ok = False
                continue
            if code in elements:
                issues.append(
                    LoadIssue(
                        str(path), doc.line_of(where), format_path(where), f"code {code!r} listed twice"
                    )
                )
                ok = False
                continue
            if element.get("display"):
                texts.setdefault(code, element["display"])
            elements[code] = tuple(
                _coding(group.get("target"), target["code"], target.get("display"))
                for target in element.get("target") or []
                if target.get("equivalence") not in _NO_MATCH and target.get("code")
            )
        unmapped = group.get("unmapped") or {}
        mode = unmapped.get("mode")
        if mode == "other-map":
            where = ("group", g_index, "unmapped", "mode")
            issues.append(
                LoadIssue(
                    str(path),
                    doc.line_of(where),
                    format_path(where),
                    "unmapped mode other-map is not supported",
                )
            )
            ok = False
        groups.append(
            _Group(
                target=group.get("target"),
                source=group.get("source"),
                elements=elements,
                unmapped_mode=mode,
                unmapped_code=unmapped.get("code"),
                unmapped_display=unmapped.get("display"),
            )
        )
    if not ok:
        return None
    return ConceptTable(table_id, data.get("url"), groups, texts)


def _expression_path(expression: str) -> tuple[str | int, ...]:
    """``ConceptMap.group[0].element[1].code`` → ``("group", 0, "element", 1, "code")``."""
    parts: list[str | int] = []
    for step in expression.split(".")[1:]:
        name, _, rest = step.partition("[")
        parts.append(name)
        if rest:
            parts.append(int(rest.rstrip("]")))
    return tuple(parts)


def _codes_as_strings(data: dict[str, Any]) -> None:
    """Numeric-looking codes (SNOMED CT ids) written without quotes are still codes."""
    for group in data.get("group") or []:
        if not isinstance(group, dict):
            continue
        for element in group.get("element") or []:
            if not isinstance(element, dict):
                continue
            if isinstance(element.get("code"), int | float) and not isinstance(element.get("code"), bool):
                element["code"] = str(element["code"])
            for target in element.get("target") or []:
                if (
                    isinstance(target, dict)
                    and isinstance(target.get("code"), int)
                    and not isinstance(target.get("code"), bool)
                ):
                    target["code"] = str(target["code"])
        unmapped = group.get("unmapped")
        if isinstance(unmapped, dict) and isinstance(unmapped.get("code"), int):
            unmapped["code"] = str(unmapped["code"])
