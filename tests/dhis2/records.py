"""FHIR records shaped like the gateway's CHT/CommCare ingest output, for DHIS2 tests and the bench."""

from __future__ import annotations

from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
PLACE_ID = "urn:chw-gateway:cht:demo:place_id"
HOUSEHOLD_EXT = "urn:chw-gateway:extension:household-location"

Resource = dict[str, Any]


def places(area: str = "CHW-AREA-KISIWA", area_id: str = "area-kisiwa") -> list[Resource]:
    """A CHW area Location (mapped to an org unit by place_id) and nothing above it."""
    return [
        {
            "resourceType": "Location",
            "id": area_id,
            "status": "active",
            "name": "CHW area",
            "identifier": [{"system": PLACE_ID, "value": area}],
        }
    ]


def household(hid: str, area_id: str = "area-kisiwa") -> Resource:
    """A household Location inside a CHW area."""
    return {
        "resourceType": "Location",
        "id": hid,
        "status": "active",
        "name": "Household",
        "partOf": {"reference": f"Location/{area_id}"},
    }


def patient(pid: str, household_id: str, client_id: str, gender: str = "female") -> Resource:
    """A Patient as the CHT person mapping writes it."""
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [
            {"use": "official", "system": "urn:chw-gateway:cht:demo:patient_id", "value": client_id}
        ],
        "name": [{"given": ["Amina"], "family": "Otieno"}],
        "gender": gender,
        "birthDate": "2021-03-04",
        "telecom": [{"system": "phone", "value": "+254700000001"}],
        "extension": [{"url": HOUSEHOLD_EXT, "valueReference": {"reference": f"Location/{household_id}"}}],
    }


def visit(
    eid: str,
    pid: str,
    household_id: str,
    start: str = "2024-05-02T10:00:00+03:00",
    *,
    muac: float | None = 11.2,
    rdt: str | None = "10828004",
    fever: bool | None = True,
    referral: bool = True,
    act_doses: int | None = 6,
) -> list[Resource]:
    """A home-visit Encounter and what the CHW recorded during it."""
    encounter_ref = {"reference": f"Encounter/{eid}"}
    subject = {"reference": f"Patient/{pid}"}
    out: list[Resource] = [
        {
            "resourceType": "Encounter",
            "id": eid,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "type": [{"coding": [{"system": SNOMED, "code": "439708006", "display": "Home visit"}]}],
            "subject": subject,
            "period": {"start": start},
            "location": [{"location": {"reference": f"Location/{household_id}"}}],
        }
    ]

    def observation(suffix: str, system: str, code: str, **value: Any) -> Resource:
        return {
            "resourceType": "Observation",
            "id": f"{eid}-{suffix}",
            "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": subject,
            "encounter": encounter_ref,
            "effectiveDateTime": start,
            **value,
        }

    if muac is not None:
        out.append(
            observation(
                "muac",
                LOINC,
                "56072-2",
                valueQuantity={
                    "value": muac,
                    "unit": "cm",
                    "system": "http://unitsofmeasure.org",
                    "code": "cm",
                },
            )
        )
    if rdt is not None:
        out.append(
            observation(
                "rdt", LOINC, "70569-9", valueCodeableConcept={"coding": [{"system": SNOMED, "code": rdt}]}
            )
        )
    if fever is not None:
        out.append(observation("fever", SNOMED, "386661006", valueBoolean=fever))
    if act_doses is not None:
        out.append(
            {
                "resourceType": "MedicationDispense",
                "id": f"{eid}-act",
                "status": "completed",
                "medicationCodeableConcept": {
                    "coding": [
                        {"system": "urn:chw-gateway:CodeSystem:medicines", "code": "artemether-lumefantrine"}
                    ]
                },
                "quantity": {"value": act_doses},
                "subject": subject,
                "context": encounter_ref,
                "whenHandedOver": start,
            }
        )
    if referral:
        out.append(
            {
                "resourceType": "ServiceRequest",
                "id": f"{eid}-referral",
                "status": "active",
                "intent": "order",
                "code": {"coding": [{"system": SNOMED, "code": "3457005"}]},
                "subject": subject,
                "encounter": encounter_ref,
                "authoredOn": start,
            }
        )
    return out


def chw_record(n: int, **visit_args: Any) -> list[Resource]:
    """Record ``n``: a household, its Patient and one home visit (IDs derived from ``n``)."""
    hid, pid, eid = f"hh-{n}", f"pt-{n}", f"enc-{n}"
    return [household(hid), patient(pid, hid, f"CL-{n:05d}"), *visit(eid, pid, hid, **visit_args)]
