"""The DHIS2 mapping file formats (``mappings/dhis2/*.yaml``), as pydantic models.

Three kinds of files, told apart by ``kind``:

* ``dhis2-tracker`` (``TrackerMapping``): Patient → tracked entity, EpisodeOfCare or the
  first qualifying Encounter → enrollment, Encounter (+ its Observations,
  MedicationDispenses, ServiceRequests) → event in a program stage;
* ``dhis2-aggregate`` (``AggregateMapping``): MeasureReport (IHE mADX style) → data value set;
* ``dhis2-org-units`` (``OrgUnitTable``): FHIR Location/Organization identifiers → org units
  (IHE mCSD style; never by name).

Metadata references (``program``, ``data_element``, ``attribute`` …) are either UIDs or
``code:<CODE>``, resolved against the DHIS2 metadata cache. Expressions are those of the
mapping engine (``gateway.mapping.expressions``: FHIRPath without the resource type
prefix, plus ``| converter`` steps such as ``| code('dhis2-sex')``), evaluated on the
resource named by the rule.

Example data value rules::

    - data_element: code:CHW_MUAC_CM
      source: Observation
      code: ["http://loinc.org|56072-2"]
      value: "valueQuantity.value"
    - data_element: code:CHW_REFERRED
      source: ServiceRequest
      present: "true"
      absent: "false"
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AggregateMapping",
    "AttributeRule",
    "DataElementRule",
    "DataValueRule",
    "EnrollmentRule",
    "OrgUnitEntry",
    "OrgUnitTable",
    "StageRule",
    "TrackedEntityRule",
    "TrackerMapping",
]

_REF = r"^([A-Za-z][A-Za-z0-9]{10}|code:[^\s]{1,100})$"
_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
EnrollmentStatus = Literal["ACTIVE", "COMPLETED", "CANCELLED"]
EventStatus = Literal["ACTIVE", "COMPLETED", "VISITED", "SCHEDULE", "OVERDUE", "SKIPPED"]
SourceType = Literal[
    "Encounter", "Observation", "MedicationDispense", "ServiceRequest", "Condition", "Procedure"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeRule(_Strict):
    """A tracked entity attribute from an expression on the Patient (or EpisodeOfCare)."""

    attribute: str = Field(pattern=_REF)
    value: str


class TrackedEntityRule(_Strict):
    """Patient → tracked entity."""

    org_unit: list[str] = Field(
        default_factory=lambda: ["managingOrganization.reference"],
        description="expressions giving Location/Organization references, tried in order",
    )
    attributes: list[AttributeRule] = []


class EnrollmentRule(_Strict):
    """EpisodeOfCare, or else the first qualifying Encounter → enrollment."""

    episode_of_care: str | None = Field(
        None, description="FHIRPath on EpisodeOfCare: the ones for this program"
    )
    enrolled_at: str = "period.start"
    org_unit: list[str] = ["managingOrganization.reference"]
    status: dict[str, EnrollmentStatus] = {"active": "ACTIVE", "finished": "COMPLETED", "cancelled": "CANCELLED"}


class DataValueRule(_Strict):
    """One data value of an event, from the Encounter or resources that reference it."""

    data_element: str = Field(pattern=_REF)
    source: SourceType = "Observation"
    code: list[str] = Field([], description="system|code tokens; a resource matches if any of its codes does")
    where: str | None = Field(None, description="FHIRPath filter on each candidate resource")
    value: str | None = Field(None, description="expression on the latest matching resource")
    present: str | None = Field(None, description="constant when a matching resource exists")
    absent: str | None = Field(None, description="constant when none exists; without it the value is cleared")


class StageRule(_Strict):
    """Qualifying Encounters → events of one program stage."""

    name: str = Field(pattern=_NAME)
    program_stage: str = Field(pattern=_REF)
    when: str = Field(description="FHIRPath on the Encounter: true if it belongs to this stage")
    occurred_at: str = "period.start"
    # FHIR Encounter.status -> DHIS2 event status; SCHEDULE (and OVERDUE, SKIPPED) events are sent
    # with scheduledAt (occurred_at read as the planned date) instead of occurredAt.
    status: dict[str, EventStatus] = {"finished": "COMPLETED", "in-progress": "ACTIVE", "arrived": "ACTIVE"}
    org_unit: list[str] = ["location.location.reference", "serviceProvider.reference"]
    data_values: list[DataValueRule] = []


class TrackerMapping(_Strict):
    """A ``dhis2-tracker`` mapping file."""

    kind: Literal["dhis2-tracker"]
    name: str = Field(pattern=_NAME)
    version: str = "1"
    description: str = ""
    program: str = Field(pattern=_REF)
    tracked_entity_type: str = Field(pattern=_REF)
    org_units: str = Field(description="org-unit table file, relative to this file")
    tracked_entity: TrackedEntityRule = TrackedEntityRule()
    enrollment: EnrollmentRule = EnrollmentRule()
    stages: list[StageRule] = Field(min_length=1)


class DataElementRule(_Strict):
    """One MeasureReport group (by code) → a data element, its strata → category option combos."""

    group: str = Field(description="system|code of MeasureReport.group.code")
    data_element: str = Field(pattern=_REF)
    stratifier: str | None = Field(None, description="system|code of the stratifier whose strata map to COCs")
    strata: dict[str, str] = Field({}, description="stratum value code → category option combo")
    total: str | None = Field("code:default", description="COC for the group total; None: no total is sent")


class AggregateMapping(_Strict):
    """An ``dhis2-aggregate`` mapping file."""

    kind: Literal["dhis2-aggregate"]
    name: str = Field(pattern=_NAME)
    version: str = "1"
    description: str = ""
    measure: str = Field(description="canonical URL of the Measure whose reports this maps")
    data_set: str = Field(pattern=_REF)
    org_units: str
    attribute_option_combo: str | None = Field(None, pattern=_REF)
    complete: bool = Field(True, description="register the data set as complete for the period")
    data_elements: list[DataElementRule] = Field(min_length=1)


class OrgUnitEntry(_Strict):
    """One identifier → org unit row."""

    system: str
    value: str
    org_unit: str = Field(pattern=_REF)


class OrgUnitTable(_Strict):
    """A ``dhis2-org-units`` file: the identifier mapping table."""

    kind: Literal["dhis2-org-units"]
    entries: list[OrgUnitEntry] = []
