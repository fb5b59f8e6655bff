"""Generate ``gateway/r4/data/r4-reference-targets.json`` from the R4 StructureDefinitions.

Run from the repository root: ``.venv/bin/python -m scripts.gen_r4_reference_targets``
(after ``scripts.gen_r4_elements``: it names types as that table does).

R4 restricts what most ``Reference`` elements may point at (``ServiceRequest.performer``:
Practitioner, PractitionerRole, Organization, CareTeam, HealthcareService, Patient,
Device, RelatedPerson; never a Location). The JSON schema behind ``r4-elements.json`` does
not say so; the ``targetProfile`` of each element's ``Reference`` type in the core
StructureDefinitions (shipped, with snapshots, in npm ``hl7.fhir.r4.examples@4.0.1``)
does. The table is::

    {"source": ..., "targets": {type: {property: [resource types allowed]}}}

``type`` and ``property`` are as in ``r4-elements.json``: a resource, a datatype
(``Annotation``: ``authorReference``) or a backbone element (``Observation_Component``),
and the JSON property name (a choice element's ``Reference`` form, e.g.
``medicationReference``). ``Reference(Any)`` elements (no ``targetProfile``, or
``Resource``) are left out: anything goes there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.npm import R4_EXAMPLES, package_dir

DATA = Path(__file__).resolve().parents[1] / "gateway" / "r4" / "data"
ELEMENTS = DATA / "r4-elements.json"
OUTPUT = DATA / "r4-reference-targets.json"
_CORE = "http://hl7.org/fhir/StructureDefinition/"
_ANY = {"Resource", "DomainResource"}


def _property(segment: str) -> str:
    """The JSON property of a path segment (``author[x]`` → ``authorReference``)."""
    return segment[:-3] + "Reference" if segment.endswith("[x]") else segment


def _owner(path: str, types: dict[str, Any]) -> str:
    """The ``r4-elements.json`` type holding the last segment of an element ``path``."""
    segments = path.split(".")
    current = segments[0]
    for segment in segments[1:-1]:
        spec = types[current]["p"].get(segment)
        if spec is None:
            raise SystemExit(f"{path}: no property {segment!r} on {current}")
        current = spec.removesuffix("[]")
    return current


def build(examples: Path, types: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Allowed target types of every restricted Reference element of the core definitions."""
    targets: dict[str, dict[str, list[str]]] = {}
    for path in sorted(examples.glob("StructureDefinition-*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        if definition.get("derivation") != "specialization":
            continue
        if definition.get("kind") not in ("resource", "complex-type") or definition.get("abstract"):
            continue
        for element in definition["snapshot"]["element"]:
            for kind in element.get("type", []):
                if kind.get("code") != "Reference":
                    continue
                allowed = set()
                for profile in kind.get("targetProfile", []):
                    if not profile.startswith(_CORE):
                        raise SystemExit(f"{element['path']}: non-core target profile {profile}")
                    allowed.add(profile[len(_CORE) :])
                if not allowed or allowed & _ANY:
                    continue
                owner = _owner(element["path"], types)
                prop = _property(element["path"].rsplit(".", 1)[-1])
                if prop not in types[owner]["p"]:
                    raise SystemExit(f"{element['path']}: {owner} has no property {prop!r}")
                targets.setdefault(owner, {})[prop] = sorted(allowed)
    return targets


def main() -> int:
    """Write the reference-target table and print its size."""
    types = json.loads(ELEMENTS.read_text(encoding="utf-8"))["types"]
    targets = build(package_dir(R4_EXAMPLES), types)
    table = {
        "source": f"targetProfile of the core StructureDefinitions in npm {R4_EXAMPLES.name}@{R4_EXAMPLES.version}",
        "targets": targets,
    }
    OUTPUT.write_text(json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    count = sum(len(props) for props in targets.values())
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes, {count} elements in {len(targets)} types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
