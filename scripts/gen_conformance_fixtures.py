"""Pick one official R4 example per resource type as the conformance suite's fixture.

Run from the repository root: ``.venv/bin/python -m scripts.gen_conformance_fixtures``.

For every resource type, among the examples of ``hl7.fhir.r4.examples@4.0.1`` that the R4B
models and the strict checker accept, take the one for which the most search parameters
can be probed (``conformance.search_values.probe``), the smaller file on ties, and skip
files over 60 kB. Four examples point a reference at a type R4 does not allow there
(``gateway.fhir.reference_targets``, which the gateway enforces); they lose to any valid
example of their type, and where none is left (DeviceMetric, DeviceUseStatement) the
offending references are taken out. The result, ``conformance/data/fixtures.json``, maps
type → resource.
The examples are CC0 (package.json of the npm package).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from conformance.search_values import NotProbed, load_definitions, probe
from gateway.errors import FhirError
from gateway.fhir.reference_targets import check_reference_targets
from gateway.fhir.strict import check_strict
from tests.support.examples import example_names, examples_dir, r4b_verdicts

OUTPUT = Path(__file__).resolve().parents[1] / "conformance" / "data" / "fixtures.json"
_MAX_BYTES = 60_000


def _score(resource: dict[str, Any], params: list[Any]) -> int:
    score = 0
    for param in params:
        try:
            probe(param, resource)
        except NotProbed:
            continue
        score += 1
    return score


def _without_wrong_targets(resource: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(valid as given, the resource without the references R4 forbids where they are)."""
    try:
        check_reference_targets(resource)
    except FhirError as exc:
        repaired = json.loads(json.dumps(resource))
        for found in exc.issues():
            _remove(repaired, found["expression"][0].split(".")[1:])
        return False, repaired
    return True, resource


def _remove(node: dict[str, Any], steps: list[str]) -> None:
    """Delete the element at ``steps`` (``reasonReference[0]`` style), and a list it empties."""
    name, _, index = steps[0].partition("[")
    value = node[name]
    if len(steps) == 1:
        if index:
            del value[int(index[:-1])]
            if value:
                return
        del node[name]
        return
    _remove(value[int(index[:-1])] if index else value, steps[1:])


def main() -> int:
    """Write the fixture file and print the coverage."""
    definitions = load_definitions()
    verdicts = r4b_verdicts()
    best: dict[str, tuple[int, int, int, str, dict[str, Any]]] = {}
    for name in example_names():
        path = examples_dir() / name
        size = path.stat().st_size
        if size > _MAX_BYTES:
            continue
        resource = json.loads(path.read_text(encoding="utf-8"))
        rtype = resource["resourceType"]
        verdict = verdicts[name]
        if (verdict is not None and not verdict.startswith("no R4B model")) or check_strict(resource):
            continue
        valid, resource = _without_wrong_targets(resource)
        params = [
            p for p in definitions if rtype in p.base or "Resource" in p.base or "DomainResource" in p.base
        ]
        key = (int(valid), _score(resource, params), -size)
        if rtype not in best or key > best[rtype][:3]:
            best[rtype] = (*key, name, resource)
    fixtures = {rtype: entry[4] for rtype, entry in sorted(best.items())}
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(
        json.dumps(fixtures, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    covered = sum(entry[1] for entry in best.values())
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes, {len(fixtures)} types, {covered} probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
