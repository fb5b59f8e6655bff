"""Valid resources the fuzzers start from, and the vocabulary of the search fuzzer.

Mutating valid resources reaches far deeper into validation than random JSON: most of a
mutated body is still right, so the one wrong element is what the gateway must catch.
"""

from __future__ import annotations

import copy
from typing import Any

from gateway.r4.types import RESOURCE_TYPES
from gateway.search.registry import default_registry

# Fixture resources every fuzzed gateway holds, so references, conditional references,
# ifNoneExist and If-Match can hit something real.
KNOWN_SYSTEM = "urn:fuzz:known"
KNOWN_PATIENT_ID = "fuzz-patient"
KNOWN_OBSERVATION_ID = "fuzz-observation"

_EXT = "http://example.org/fhir/StructureDefinition/fuzz"

SEEDS: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "identifier": [{"system": KNOWN_SYSTEM, "value": "seed-patient"}],
        "active": True,
        "name": [{"use": "official", "family": "Zoë", "given": ["Ana", "Maria"]}],
        "telecom": [{"system": "phone", "value": "+255 700 000 000", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1980-05-17",
        "_birthDate": {"extension": [{"url": _EXT, "valueString": "day"}]},
        "address": [{"line": ["1 Main St"], "city": "Arusha", "country": "TZ"}],
        "extension": [{"url": _EXT, "valueString": "x"}],
        "generalPractitioner": [{"reference": "Practitioner/fuzz-practitioner"}],
    },
    "Observation": {
        "resourceType": "Observation",
        "identifier": [{"system": KNOWN_SYSTEM, "value": "seed-observation"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{KNOWN_PATIENT_ID}"},
        "effectiveDateTime": "2024-03-01T10:00:00+01:00",
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "note": [{"text": "weighed at the household visit"}],
    },
    "Encounter": {
        "resourceType": "Encounter",
        "identifier": [{"system": KNOWN_SYSTEM, "value": "seed-encounter"}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
        "subject": {"reference": f"Patient/{KNOWN_PATIENT_ID}"},
        "period": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:30:00Z"},
    },
    "Condition": {
        "resourceType": "Condition",
        "identifier": [{"system": KNOWN_SYSTEM, "value": "seed-condition"}],
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"text": "malaria"},
        "subject": {"reference": f"Patient/{KNOWN_PATIENT_ID}"},
        "onsetDateTime": "2024-02",
    },
    "Immunization": {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "20"}]},
        "patient": {"reference": f"Patient/{KNOWN_PATIENT_ID}"},
        "occurrenceDateTime": "2024-01-15",
        "lotNumber": "LOT-1",
    },
}

FUZZ_TYPES = tuple(sorted(SEEDS))


def seed(rtype: str) -> dict[str, Any]:
    """A fresh copy of the seed resource of ``rtype``."""
    return copy.deepcopy(SEEDS[rtype])


def fixture_resources() -> list[dict[str, Any]]:
    """Resources with fixed ids a fuzzed gateway is loaded with (via PUT) before fuzzing."""
    patient = {
        **seed("Patient"),
        "id": KNOWN_PATIENT_ID,
        "identifier": [{"system": KNOWN_SYSTEM, "value": "k1"}],
    }
    observation = {**seed("Observation"), "id": KNOWN_OBSERVATION_ID}
    return [patient, observation]


def search_params(rtype: str) -> list[str]:
    """Codes of the search parameters the gateway supports on ``rtype``."""
    return sorted(default_registry().params(rtype))


def reference_params(rtype: str) -> list[str]:
    """Codes of ``rtype``'s reference search parameters."""
    return sorted(code for code, p in default_registry().params(rtype).items() if p.type == "reference")


ALL_TYPES = tuple(sorted(RESOURCE_TYPES))
