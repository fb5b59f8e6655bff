"""The ``options`` of a FHIR destination with ``profile: openmrs`` (an OpenMRS FHIR2 module).

destinations:
  - name: openmrs
    kind: fhir
    base_url: https://emr.example.org/openmrs/ws/fhir2/R4
    auth: {type: basic, username: gateway, secret_env: OPENMRS_PASSWORD}
    filter: {resource_types: [Patient, Encounter, Observation, ServiceRequest, Task]}
    options:
      profile: openmrs
      conceptmaps: mappings/openmrs/conceptmaps
      upsert: [Task]      # = the site's global property fhir2.upsert.supported.resources
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The types the module can create with a client-assigned id (PUT), when the site allows it.
UPSERT_CAPABLE = frozenset({"Location", "Medication", "Practitioner", "Task"})


class OpenMrsOptions(BaseModel):
    """How the gateway's resources become what an OpenMRS site accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: Literal["openmrs"]
    conceptmaps: Path = Field(Path("mappings/openmrs/conceptmaps"), description="folder of the site's ConceptMaps")
    identifier_types: str = Field("openmrs-identifier-types", description="ConceptMap: identifier system → type uuid")
    encounter_types: str = Field("openmrs-encounter-types", description="ConceptMap: Encounter.type code → type uuid")
    locations: str = Field("openmrs-locations", description="ConceptMap: Location identifier or id → location uuid")
    upsert: tuple[str, ...] = Field(
        (), description="types the site lets clients create by PUT (fhir2.upsert.supported.resources)"
    )

    @field_validator("upsert")
    @classmethod
    def _capable(cls, upsert: tuple[str, ...]) -> tuple[str, ...]:
        wrong = sorted(set(upsert) - UPSERT_CAPABLE)
        if wrong:
            raise ValueError(f"OpenMRS can upsert only {', '.join(sorted(UPSERT_CAPABLE))} (not {', '.join(wrong)})")
        return upsert
