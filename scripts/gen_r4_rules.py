"""Generate ``gateway/r4/data/r4-bindings.json`` and ``r4-invariants.json`` from the R4 definitions.

Run from the repository root: ``.venv/bin/python -m scripts.gen_r4_rules`` (after
``scripts.gen_r4_elements``: the element table names the types the rules attach to).

The source is the StructureDefinitions, ValueSets and CodeSystems of FHIR R4 4.0.1 as
published in npm ``hl7.fhir.r4.examples@4.0.1`` (the package carries every conformance
resource of the specification; ``hl7.fhir.r4.core`` is not published on the npm registry).

``r4-bindings.json``
    ``codeSystems``: value set url → the code systems its codes come from (what a search
    ``system|code`` on a ``code`` element may name: its system is implied by the binding).
    ``valueSets``: url → sorted codes, for every value set a REQUIRED binding on a
    ``code``-typed element points to and that expands from the core CodeSystems and
    ValueSets alone (``include`` of a whole code system, of listed concepts, of other
    value sets; ``exclude`` likewise). ``elements``: element-table type → property →
    value set url. ``skipped``: element path → why its binding is not enforced (a value
    set that needs an external terminology such as BCP-13 MIME types or UCUM, one defined
    by a filter, or an element of type Coding/CodeableConcept/Quantity/string/uri, which
    the gateway does not check against terminology).
``r4-invariants.json``
    ``types``: element-table type (``Patient``, ``Patient_Contact``, ``HumanName``) →
    ``[key, severity, human, expression, element]`` for every base invariant of the
    definition whose context is an object of that type; ``element`` is ``""`` for the
    object itself or the property name when the context is one of its primitive or
    choice elements. ``paths``: type → its element path (``Patient.contact``), which
    FHIRPath needs to resolve choice elements (``value`` → ``valueQuantity``). ``ele-1``
    is left out: every element has it and the strict checker already refuses the empty
    objects, nulls and empty arrays it forbids.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.support.npm import R4_EXAMPLES, package_dir

DATA = Path(__file__).resolve().parents[1] / "gateway" / "r4" / "data"
_RESOURCE_BASES = (
    "http://hl7.org/fhir/StructureDefinition/DomainResource",
    "http://hl7.org/fhir/StructureDefinition/Resource",
)


class Unexpandable(Exception):
    """A value set that the core definitions alone cannot expand."""


class Terminology:
    """The core ValueSets and CodeSystems, expanded on demand."""

    def __init__(self, package: Path) -> None:
        self.value_sets: dict[str, dict[str, Any]] = {}
        self.code_systems: dict[str, dict[str, Any]] = {}
        for path in package.glob("ValueSet-*.json"):
            vs = json.loads(path.read_text(encoding="utf-8"))
            self.value_sets[vs["url"]] = vs
        for path in package.glob("CodeSystem-*.json"):
            cs = json.loads(path.read_text(encoding="utf-8"))
            self.code_systems[cs["url"]] = cs

    def expand(self, url: str, seen: tuple[str, ...] = ()) -> set[str]:
        """Every code of value set ``url`` (``Unexpandable`` says why not)."""
        url = url.split("|", 1)[0]
        if url in seen:
            raise Unexpandable(f"value set {url} includes itself")
        vs = self.value_sets.get(url)
        if vs is None:
            raise Unexpandable(f"value set {url} is not in the core definitions")
        compose = vs.get("compose")
        if not compose:
            raise Unexpandable(f"value set {url} has no compose")
        codes: set[str] = set()
        for part in compose.get("include", []):
            codes |= self._part(part, (*seen, url))
        for part in compose.get("exclude", []):
            codes -= self._part(part, (*seen, url))
        return codes

    def systems(self, url: str, seen: tuple[str, ...] = ()) -> set[str]:
        """The code systems value set ``url`` draws its codes from (through included value sets too)."""
        url = url.split("|", 1)[0]
        if url in seen or url not in self.value_sets:
            return set()
        found: set[str] = set()
        for part in self.value_sets[url].get("compose", {}).get("include", []):
            if "system" in part:
                found.add(part["system"])
            for inner in part.get("valueSet", []):
                found |= self.systems(inner, (*seen, url))
        return found

    def _part(self, part: dict[str, Any], seen: tuple[str, ...]) -> set[str]:
        if "filter" in part:
            raise Unexpandable(f"a filter on {part.get('system')}")
        found: set[str] | None = None
        if "system" in part:
            system = part["system"]
            cs = self.code_systems.get(system)
            complete = cs is not None and cs.get("content") == "complete"
            if "concept" in part:
                # Listed codes are the expansion, even from an external system (UCUM's units of time).
                found = {c["code"] for c in part["concept"]}
                if complete and cs is not None and not found <= set(_all_codes(cs["concept"], selectable_only=False)):
                    raise Unexpandable(f"codes not defined by {system}: {sorted(found)}")
            elif complete and cs is not None:
                found = set(_all_codes(cs.get("concept", [])))
            else:
                raise Unexpandable(f"code system {system} is external or not complete in the core definitions")
        for inner in part.get("valueSet", []):
            codes = self.expand(inner, seen)
            found = codes if found is None else found & codes
        return found or set()


def _all_codes(concepts: Iterable[dict[str, Any]], *, selectable_only: bool = True) -> Iterable[str]:
    for concept in concepts:
        if not (selectable_only and _abstract(concept)):
            yield concept["code"]
        yield from _all_codes(concept.get("concept", []), selectable_only=selectable_only)


def _abstract(concept: dict[str, Any]) -> bool:
    """A grouping concept (``notSelectable``/``abstract``): not a code an instance may carry."""
    return any(
        p.get("code") in ("notSelectable", "abstract") and p.get("valueBoolean") is True
        for p in concept.get("property", [])
    )


def _definitions(package: Path, types: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path in sorted(package.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text(encoding="utf-8"))
        if (
            sd.get("kind") in ("resource", "complex-type")
            and sd["id"] in types
            and sd["id"] == sd.get("name", sd["id"])
        ):
            out.append(sd)
    return out


def _locate(path: str, types: dict[str, Any]) -> tuple[str, str] | None:
    """``(element-table type, property)`` of an element path; property "" for the object itself."""
    parts = path.split(".")
    current = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        props = types[current]["p"]
        last = index == len(parts) - 1
        name = part[:-3] if part.endswith("[x]") else part
        if last and (name in props or part.endswith("[x]")):
            spec = props.get(name, "")
            target = spec.rstrip("[]")
            if target in types and target != "Resource" and not part.endswith("[x]") and "_" in target:
                return target, ""  # a backbone element: its own type
            return current, name
        spec = props.get(name)
        if spec is None:
            return None
        current = spec.rstrip("[]")
        if current not in types:
            return None
    return current, ""


def build(package: Path, table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bindings and invariants data of the definitions in ``package``."""
    types = table["types"]
    terminology = Terminology(package)
    value_sets: dict[str, list[str]] = {}
    elements: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    invariants: dict[str, list[list[str]]] = {}
    paths: dict[str, str] = {}  # element-table type → its element path, for FHIRPath's type lookups
    for sd in _definitions(package, types):
        seen_keys: set[tuple[str, str]] = set()
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            if not path.startswith(sd["id"]):
                continue
            _binding(path, element, types, terminology, value_sets, elements, skipped)
            for constraint in element.get("constraint", []):
                key = constraint["key"]
                source = constraint.get("source", sd["url"])
                if key == "ele-1" or (key, path) in seen_keys:
                    continue
                own_types = {t["code"] for t in element.get("type", [])}
                if path != sd["id"] and source.rsplit("/", 1)[-1] in own_types:
                    continue  # the element's datatype carries it (Extension.extension's ext-1)
                if source != sd["url"] and not (sd["kind"] == "resource" and source in _RESOURCE_BASES):
                    if sd.get("derivation") != "constraint" or key == "ext-1":
                        continue  # brought by the element's own type (Extension's ext-1)
                seen_keys.add((key, path))
                where = _locate(path, types)
                if where is None:
                    raise SystemExit(f"cannot place invariant {key} on {path}")
                paths.setdefault(where[0], path.rsplit(".", 1)[0] if where[1] else path)
                invariants.setdefault(where[0], []).append(
                    [key, constraint["severity"], constraint["human"], constraint.get("expression", ""), where[1]]
                )
    bindings = {
        "source": f"npm {R4_EXAMPLES.name}@{R4_EXAMPLES.version}",
        "valueSets": {url: sorted(codes) for url, codes in sorted(value_sets.items())},
        "codeSystems": {url: sorted(terminology.systems(url)) for url in sorted(value_sets)},
        "elements": {name: dict(sorted(props.items())) for name, props in sorted(elements.items())},
        "skipped": dict(sorted(skipped.items())),
    }
    return bindings, {
        "source": bindings["source"],
        "paths": dict(sorted(paths.items())),
        "types": dict(sorted(invariants.items())),
    }


def _binding(
    path: str,
    element: dict[str, Any],
    types: dict[str, Any],
    terminology: Terminology,
    value_sets: dict[str, list[str]],
    elements: dict[str, dict[str, str]],
    skipped: dict[str, str],
) -> None:
    binding = element.get("binding")
    if not binding or binding.get("strength") != "required" or "valueSet" not in binding:
        return
    codes = [t["code"] for t in element.get("type", [])]
    if codes != ["code"]:
        skipped[path] = f"type {'|'.join(codes)} is not checked against terminology"
        return
    url = binding["valueSet"].split("|", 1)[0]
    try:
        expansion = terminology.expand(url)
    except Unexpandable as exc:
        skipped[path] = str(exc)
        return
    where = _locate(path, types)
    if where is None or not where[1]:
        raise SystemExit(f"cannot place binding of {path}")
    name = where[1] + ("Code" if path.endswith("[x]") else "")
    value_sets[url] = sorted(expansion)
    elements.setdefault(where[0], {})[name] = url


def main() -> int:
    """Write both data files and print their sizes."""
    table = json.loads((DATA / "r4-elements.json").read_text(encoding="utf-8"))
    bindings, invariants = build(package_dir(R4_EXAMPLES), table)
    for name, data in (("r4-bindings.json", bindings), ("r4-invariants.json", invariants)):
        out = DATA / name
        out.write_text(
            json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    print(
        f"{sum(len(p) for p in bindings['elements'].values())} bound elements, "
        f"{len(bindings['valueSets'])} value sets, {len(bindings['skipped'])} skipped, "
        f"{sum(len(v) for v in invariants['types'].values())} invariants"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
