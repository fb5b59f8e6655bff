"""The OpenMRS site the stand-in plays: its metadata, as an implementer configures it.

Identifier types, locations, encounter types and concepts are OpenMRS objects with UUIDs;
the FHIR2 module resolves what a client sends against them (``../shared/sources/README.md``
§4): an identifier's type by its ``system`` when the site registered one in
``fhir_patient_identifier_system``, else by ``type.text`` (the type's name or UUID); an
encounter type by its UUID under ``…/code-system/encounter-type``; a concept by its UUID
(a coding without system) or by a mapping in a concept source with a FHIR URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENCOUNTER_TYPE_SYSTEM = "http://fhir.openmrs.org/code-system/encounter-type"
VISIT_TYPE_SYSTEM = "http://fhir.openmrs.org/code-system/visit-type"
ENCOUNTER_TAG_SYSTEM = "http://fhir.openmrs.org/ext/encounter-tag"
IDENTIFIER_LOCATION_URL = "http://fhir.openmrs.org/ext/patient/identifier#location"
TASK_IDENTIFIER_SYSTEM = "http://fhir.openmrs.org/ext/task/identifier"
CIEL = "https://openconceptlab.org/orgs/CIEL/sources/CIEL"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
# The four metadata types the module can upsert, when ``fhir2.upsert.supported.resources`` lists them.
UPSERT_CAPABLE = frozenset({"Location", "Medication", "Practitioner", "Task"})


@dataclass(frozen=True, slots=True)
class IdentifierType:
    """An OpenMRS patient identifier type."""

    uuid: str
    name: str
    location_required: bool = True  # locationBehavior REQUIRED, the reference application's default


@dataclass(slots=True)
class Site:
    """The metadata of one OpenMRS installation."""

    identifier_types: list[IdentifierType] = field(default_factory=list)
    identifier_systems: dict[str, str] = field(default_factory=dict)  # FHIR system -> identifier type uuid
    locations: dict[str, str] = field(default_factory=dict)  # uuid -> name
    encounter_types: dict[str, str] = field(default_factory=dict)  # uuid -> name
    concepts: dict[str, dict[str, str]] = field(default_factory=dict)  # uuid -> {FHIR system: code}
    upsert_resources: frozenset[str] = frozenset()  # global property fhir2.upsert.supported.resources

    def identifier_type(self, system: str | None, text: str | None) -> IdentifierType | None:
        """The type an identifier resolves to (by registered system, else by name or uuid), or None."""
        if system and system in self.identifier_systems:
            wanted = self.identifier_systems[system]
            return next((t for t in self.identifier_types if t.uuid == wanted), None)
        if text:
            return next((t for t in self.identifier_types if text in (t.name, t.uuid)), None)
        return None

    def concept(self, system: str | None, code: str | None) -> str | None:
        """The concept uuid a coding resolves to, or None."""
        if not code:
            return None
        if not system:
            return code if code in self.concepts else None
        return next((uuid for uuid, maps in self.concepts.items() if maps.get(system) == code), None)


def _ciel(number: int) -> str:
    """A CIEL concept uuid: the number padded with ``A`` to 36 characters (as CIEL publishes them)."""
    return str(number).ljust(36, "A")


def reference_site(*, upsert: frozenset[str] = frozenset({"Task"})) -> Site:
    """A site like the OpenMRS reference application, plus a CHW programme's identifier type."""
    return Site(
        identifier_types=[
            IdentifierType("05a29f94-c0ed-11e2-94be-8c13b969e334", "OpenMRS ID"),
            IdentifierType("a5d38e09-efcb-4d91-a526-50ce1ba5011a", "CHT Patient ID"),
            IdentifierType("b4143563-16cd-4439-b288-f83d61670fc8", "National ID", location_required=False),
        ],
        identifier_systems={
            "http://openmrs.example.org/identifier/national-id": "b4143563-16cd-4439-b288-f83d61670fc8"
        },
        locations={
            "8d6c993e-c2cc-11de-8d13-0010c6dffd0f": "Unknown Location",
            "44c3efb0-2583-4c80-a79e-1f756a03c0a1": "Kisenyi HC IV",
            "ba685651-ed3b-4e63-9b35-78893060758a": "Kisiwa community unit",
        },
        encounter_types={
            "d7151f82-c1f3-4152-a605-2f9ea7414a79": "Community home visit",
            "67a71486-1a54-468f-ac3e-7091a9a79584": "Vitals",
        },
        concepts={
            _ciel(5085): {CIEL: "5085", LOINC: "8480-6"},
            _ciel(5086): {CIEL: "5086", LOINC: "8462-4"},
            _ciel(5088): {CIEL: "5088", LOINC: "8310-5"},
            _ciel(5089): {CIEL: "5089", LOINC: "29463-7"},
            _ciel(5090): {CIEL: "5090", LOINC: "8302-2"},
            _ciel(5242): {CIEL: "5242", LOINC: "9279-1"},
            _ciel(1343): {CIEL: "1343", LOINC: "56072-2"},
        },
        upsert_resources=upsert & UPSERT_CAPABLE,
    )
