"""The topics the gateway offers, and how each is served on R4 (a ``Basic`` resource).

R4 has no ``SubscriptionTopic``: a topic is referenced by its canonical URL only (the
``criteria`` of a backport Subscription), listed in the CapabilityStatement, and may be
readable as a ``Basic`` resource (Backport IG, "Topics in R4"). Each topic names which
changes trigger it as FHIR search parameters, so one search (the trigger, the client's
``backport-filter-criteria`` and ``_id`` of the changed resources) decides what matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOPIC_PREFIX = "urn:chw-gateway:topic:"
#: SNOMED CT 3457005 "Patient referral": the code the referral mappings give a ServiceRequest.
REFERRAL = "http://snomed.info/sct|3457005"
LABORATORY = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
_TOPIC_CODE = {"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}
_R5_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"


@dataclass(frozen=True, slots=True)
class Trigger:
    """Changes of one resource type that trigger a topic."""

    resource_type: str
    interactions: frozenset[str]  # create | update | delete (change-feed ops)
    query: tuple[tuple[str, str], ...] = ()  # search parameters the resource must match
    focus_type: str | None = None  # the resource's ``focus`` must refer to this type (a referral Task) …
    focus_query: tuple[tuple[str, str], ...] = ()  # … and the focused resource match these parameters
    description: str = ""


@dataclass(frozen=True, slots=True)
class Topic:
    """One subscription topic: its triggers and the filters a subscription may add."""

    id: str
    title: str
    description: str
    triggers: tuple[Trigger, ...]
    filters: Mapping[str, tuple[str, ...]]  # resource type -> search parameters allowed in filter criteria

    @property
    def url(self) -> str:
        """The topic's canonical URL (a Subscription's ``criteria``)."""
        return TOPIC_PREFIX + self.id

    @property
    def basic_id(self) -> str:
        """The id of the ``Basic`` resource that describes the topic."""
        return f"topic-{self.id}"

    def trigger_for(self, resource_type: str, op: str) -> Trigger | None:
        """The trigger a change of ``resource_type`` by ``op`` may fire, if any."""
        for trigger in self.triggers:
            if trigger.resource_type == resource_type and op in trigger.interactions:
                return trigger
        return None

    def as_basic(self) -> dict[str, Any]:
        """The topic as an R4 ``Basic`` resource (its R5 elements as cross-version extensions)."""
        triggers = [
            {"url": "resourceTrigger", "extension": [
                {"url": "description", "valueMarkdown": t.description},
                {"url": "resource", "valueUri": f"http://hl7.org/fhir/StructureDefinition/{t.resource_type}"},
                *({"url": "supportedInteraction", "valueCode": op} for op in sorted(t.interactions)),
                *([{"url": "queryCriteria", "extension": [
                    {"url": "current", "valueString": "&".join(f"{k}={v}" for k, v in t.query)}]}]
                  if t.query else []),
            ]}
            for t in self.triggers
        ]  # fmt: skip
        can_filter = [
            {"url": "canFilterBy", "extension": [
                {"url": "resource", "valueUri": f"http://hl7.org/fhir/StructureDefinition/{rtype}"},
                {"url": "filterParameter", "valueString": param}]}
            for rtype, params in self.filters.items() for param in params
        ]  # fmt: skip
        return {
            "resourceType": "Basic",
            "id": self.basic_id,
            "code": {"coding": [_TOPIC_CODE]},
            "extension": [
                {"url": f"{_R5_EXT}.url", "valueUri": self.url},
                {"url": f"{_R5_EXT}.title", "valueString": self.title},
                {"url": f"{_R5_EXT}.status", "valueCode": "active"},
                {"url": f"{_R5_EXT}.description", "valueMarkdown": self.description},
                *({"url": f"{_R5_EXT}.resourceTrigger", "extension": t["extension"]} for t in triggers),
                *({"url": f"{_R5_EXT}.canFilterBy", "extension": f["extension"]} for f in can_filter),
            ],
        }


_CHANGED = frozenset({"create", "update"})
_NEW = frozenset({"create"})

TOPICS: tuple[Topic, ...] = (
    Topic(
        id="referral",
        title="New or changed referrals",
        description="A referral ServiceRequest (code SNOMED CT 3457005 Patient referral) or the Task tracking"
        " one is created or updated.",
        triggers=(
            Trigger("ServiceRequest", _CHANGED, (("code", REFERRAL),), description="a referral ServiceRequest"),
            Trigger("Task", _CHANGED, (("code", "http://hl7.org/fhir/CodeSystem/task-code|fulfill"),),
                    focus_type="ServiceRequest", focus_query=(("code", REFERRAL),),
                    description="the Task fulfilling a referral"),
        ),
        filters={"ServiceRequest": ("patient", "subject", "performer", "status", "priority"),
                 "Task": ("patient", "subject", "owner", "status")},
    ),
    Topic(
        id="new-patient",
        title="New Patients in an organisation",
        description="A Patient is created; filter by organization (the Patient's managingOrganization).",
        triggers=(Trigger("Patient", _NEW, description="a Patient is created"),),
        filters={"Patient": ("organization", "general-practitioner", "address-city", "address-district")},
    ),
    Topic(
        id="lab-observation",
        title="New laboratory Observations",
        description="An Observation of category laboratory is created.",
        triggers=(Trigger("Observation", _NEW, (("category", LABORATORY),), description="a laboratory result"),),
        filters={"Observation": ("patient", "subject", "code", "status", "performer")},
    ),
)

BY_URL: Mapping[str, Topic] = {topic.url: topic for topic in TOPICS}
BY_BASIC_ID: Mapping[str, Topic] = {topic.basic_id: topic for topic in TOPICS}

