"""CHT outbound documents for the DHIS2 end-to-end tests (shapes of shared/sources samples)."""

from __future__ import annotations

from typing import Any

AREA_ID = "a7d1c3e5-0000-4000-8000-000000000001"
BASE_MS = 1_715_594_400_000  # 2024-05-13T10:00:00Z


def area() -> dict[str, Any]:
    """The CHW area (a health_center place) whose place_id maps to the Kisiwa community unit."""
    return {
        "_id": AREA_ID,
        "type": "health_center",
        "name": "Kisiwa CHW area",
        "place_id": "CHW-AREA-KISIWA",
        "reported_date": BASE_MS,
    }


def household(n: int) -> dict[str, Any]:
    """Household ``n`` in the CHW area."""
    return {
        "_id": f"hh-{n:04d}-0000-4000-8000-000000000000",
        "type": "clinic",
        "name": f"Household {n}",
        "place_id": f"HH-{n:05d}",
        "parent": {"_id": AREA_ID},
        "reported_date": BASE_MS,
    }


def person(n: int) -> dict[str, Any]:
    """Child ``n`` of household ``n``."""
    return {
        "_id": f"pp-{n:04d}-0000-4000-8000-000000000000",
        "type": "person",
        "name": f"Child Number{n}",
        "patient_id": f"P{n:05d}",
        "sex": "female" if n % 2 else "male",
        "date_of_birth": "2022-11-03",
        "parent": {"_id": household(n)["_id"], "parent": {"_id": AREA_ID}},
        "reported_date": BASE_MS,
    }


def assessment(
    n: int, *, muac: str = "11.2", rdt: str = "positive", refer: str = "yes", day: int = 0
) -> dict[str, Any]:
    """An iCCM assessment of child ``n`` by the CHW, ``day`` days after 13 May 2024."""
    child = person(n)
    return {
        "_id": f"rr-{n:04d}-{day:04d}-4000-8000-000000000000",
        "type": "data_record",
        "form": "assessment",
        "reported_date": BASE_MS + day * 86_400_000,
        "contact": {"_id": "chw-0001-0000-4000-8000-000000000000", "parent": {"_id": AREA_ID}},
        "fields": {
            "patient_uuid": child["_id"],
            "patient_id": child["_id"],
            "visited_contact_uuid": household(n)["_id"],
            "group_fever": {
                "patient_fever": "yes",
                "patient_temperature": "38.9",
                "fever_duration": "2",
                "mrdt_result": rdt,
                "malaria_treatment_given": "yes",
                "malaria_treatment": "act",
            },
            "group_cough": {"patient_coughs": "no", "chest_indrawing": "no"},
            "group_breathing": {"breath_count": "44"},
            "group_diarrhea": {"patient_diarrhea": "no"},
            "group_danger_signs": {"danger_signs": ""},
            "group_nutrition_assessment": {
                "muac_score": muac,
                "muac_color": "red",
                "child_weight": "10.4",
                "has_oedema": "no",
            },
            "group_diagnosis": {"diagnosis_fever": "malaria1"},
            "group_referral": {
                "refer_to_facility": refer,
                "referral_urgency": "immediate",
                "referral_facility": "Kisiwa HC",
            },
        },
    }
