"""Validation from the official R4 definitions, over HTTP (issue 12, finding 9: one test per finding)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ApiHarness

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def _codes(response: httpx.Response) -> list[tuple[str, str]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return [(i["code"], (i.get("expression") or [""])[0]) for i in body["issue"]]


def _medication_request(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "amoxicillin"},
        "subject": {"reference": "Patient/p1"},
        **fields,
    }


async def test_required_bindings_of_the_definitions_are_enforced(api: ApiHarness) -> None:
    c = api.client
    ok = await c.post("/fhir/MedicationRequest", json=_medication_request())
    assert ok.status_code == 201, ok.text
    bad = await c.post("/fhir/MedicationRequest", json=_medication_request(status="bogus", intent="bogus"))
    assert bad.status_code == 400
    assert set(_codes(bad)) == {
        ("code-invalid", "MedicationRequest.status"),
        ("code-invalid", "MedicationRequest.intent"),
    }
    assert "medicationrequest-status" in bad.json()["issue"][0]["diagnostics"]
    immunization = {
        "resourceType": "Immunization",
        "status": "COMPLETED",
        "vaccineCode": {"text": "BCG"},
        "patient": {"reference": "Patient/p1"},
        "occurrenceDateTime": "2024-01-01",
    }
    response = await c.post("/fhir/Immunization", json=immunization)
    assert response.status_code == 400 and _codes(response) == [("code-invalid", "Immunization.status")]
    immunization["status"] = "completed"
    assert (await c.post("/fhir/Immunization", json=immunization)).status_code == 201
    patient = await c.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "Male"})
    assert patient.status_code == 400 and _codes(patient) == [("code-invalid", "Patient.gender")]


async def test_base_invariants_are_evaluated(api: ApiHarness) -> None:
    c = api.client
    risk: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 101}],
    }
    response = await c.post("/fhir/RiskAssessment", json=risk)
    assert response.status_code == 422
    assert _codes(response) == [("invariant", "RiskAssessment.prediction[0]")]
    assert response.json()["issue"][0]["diagnostics"].startswith("ras-2:")
    risk["prediction"][0]["probabilityDecimal"] = 99.5  # same shape: the value decides
    assert (await c.post("/fhir/RiskAssessment", json=risk)).status_code == 201
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "display", "text": "Hello", "required": True}],
    }
    response = await c.post("/fhir/Questionnaire", json=questionnaire)
    assert response.status_code == 422 and response.json()["issue"][0]["diagnostics"].startswith("que-6:")
    que12 = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {
                "linkId": "1",
                "type": "string",
                "enableWhen": [{"question": "0", "operator": "=", "answerBoolean": True}]
                * 3,  # R4's que-12 says "count() > 2" (R4B fixed it to > 1)
            }
        ],
    }
    response = await c.post("/fhir/Questionnaire", json=que12)
    assert response.status_code == 422 and response.json()["issue"][0]["diagnostics"].startswith("que-12:")
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "period": {"start": "2024-02-01", "end": "2024-01-01"},
    }
    response = await c.post("/fhir/Encounter", json=encounter)
    assert response.status_code == 422 and _codes(response) == [("invariant", "Encounter.period")]
    encounter["period"] = {"start": "2024-01-01T10:00:00+02:00", "end": "2024-01-01T09:30:00Z"}
    assert (await c.post("/fhir/Encounter", json=encounter)).status_code == 201


async def test_the_narrative_is_parsed_and_checked(api: ApiHarness) -> None:
    c = api.client

    async def post(div: str) -> httpx.Response:
        return await c.post(
            "/fhir/Patient", json={"resourceType": "Patient", "text": {"status": "generated", "div": div}}
        )

    assert (await post(f"<div {XHTML}><p>Jane &amp; &#169; <b>Doe</b></p></div>")).status_code == 201
    for div in (
        f"<div {XHTML}>&reg;</div>",
        f"<div {XHTML}><script>alert(1)</script></div>",
        f'<div {XHTML}><p onclick="alert(1)">x</p></div>',
        f'<div {XHTML}><a href="javascript:alert(1)">x</a></div>',
        f"<div {XHTML}><iframe src='x'/></div>",
        "<div>no namespace</div>",
        f"<div {XHTML}>unclosed",
        f'<!DOCTYPE div [<!ENTITY x "y">]><div {XHTML}>&x;</div>',
    ):
        response = await post(div)
        assert response.status_code == 400, div
        assert _codes(response) == [("value", "Patient.text.div")], div
        assert "alert" not in response.text  # messages quote no content


async def test_extension_only_primitives_are_accepted(api: ApiHarness) -> None:
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    observation = {"resourceType": "Observation", "_status": absent, "code": {"text": "weight"}}
    response = await api.client.post("/fhir/Observation", json=observation)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["_status"] == absent and "status" not in stored
    questionnaire = {
        "resourceType": "Questionnaire",
        "_status": absent,
        "item": [{"_linkId": absent, "type": "display", "text": "x"}],
    }
    assert (await api.client.post("/fhir/Questionnaire", json=questionnaire)).status_code == 201
    # Neither value nor extension: still missing.
    missing = {"resourceType": "Observation", "code": {"text": "weight"}}
    assert (await api.client.post("/fhir/Observation", json=missing)).status_code == 422


async def test_a_utf8_byte_order_mark_is_accepted(api: ApiHarness) -> None:
    body = b'\xef\xbb\xbf{"resourceType":"Patient","gender":"female"}'
    response = await api.client.post("/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 201, response.text
    assert response.json()["gender"] == "female"
    bad = await api.client.post("/fhir/Patient", content=b'\xef\xbb\xbf{"resourceType":"Patient","x":"\xff"}')
    assert bad.status_code == 400 and "UTF-8" in bad.json()["issue"][0]["diagnostics"]


_DISPENSE = {
    "resourceType": "MedicationDispense",
    "status": "completed",
    "medicationCodeableConcept": {"text": "amoxicillin"},
}
_UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("rtype", "good", "bad", "key"),
    [
        # Compiled to Python predicates (gateway.fhir.invariant_predicates): each pair has
        # one shape, so the values decide, once the plan of the shape exists.
        (
            "Condition",
            {"subject": {"reference": "Patient/p1"}, "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                            "code": "active"}]},
             "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                "code": "confirmed"}]}},
            {"subject": {"reference": "Patient/p1"}, "clinicalStatus": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
             "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                "code": "entered-in-error"}]}},
            "con-5",
        ),
        ("Organization", {"name": "clinic", "telecom": [{"system": "phone", "use": "work"}]},
         {"name": "clinic", "telecom": [{"system": "phone", "use": "home"}]}, "org-3"),
        (
            "MedicationRequest",
            {**_medication_request(), "dispenseRequest": {"expectedSupplyDuration": {"value": 3, "code": "d",
                                                                                     "system": _UCUM}}},
            {**_medication_request(), "dispenseRequest": {"expectedSupplyDuration": {"value": 3, "code": "d",
                                                                                     "system": "http://x"}}},
            "drt-1",
        ),
        ({**_DISPENSE, "whenPrepared": "2024-01-01T10:00:00Z", "whenHandedOver": "2024-01-01T11:00:00Z"},
         None, {"whenPrepared": "2024-01-01T10:00:00Z", "whenHandedOver": "2024-01-01T09:00:00Z"}, "mdd-1"),
        # Decided natively: duplicate linkIds anywhere (que-2), a range whose low passes its high (rng-2).
        ({"resourceType": "Questionnaire", "status": "active", "item": [
            {"linkId": "a", "type": "group", "item": [{"linkId": "b", "type": "string"}]}]},
         None, {"item": [{"linkId": "a", "type": "group", "item": [{"linkId": "a", "type": "string"}]}]}, "que-2"),
        ({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
          "valueRange": {"low": {"value": 1, "unit": "kg"}, "high": {"value": 2, "unit": "kg"}}},
         None, {"valueRange": {"low": {"value": 2.5, "unit": "kg"}, "high": {"value": 2, "unit": "kg"}}}, "rng-2"),
    ],
)  # fmt: skip
async def test_invariants_judge_each_value_of_one_shape(
    api: ApiHarness, rtype: Any, good: dict[str, Any] | None, bad: dict[str, Any], key: str
) -> None:
    if isinstance(rtype, dict):  # a whole resource, and the fields that break it
        good_resource, bad_resource = rtype, {**rtype, **bad}
    else:
        base = {"resourceType": rtype}
        good_resource, bad_resource = {**base, **(good or {})}, {**base, **bad}
    rtype_name = good_resource["resourceType"]
    for _ in range(2):  # the second round runs on the plans the first one made
        ok = await api.client.post(f"/fhir/{rtype_name}", json=good_resource)
        assert ok.status_code == 201, ok.text
        refused = await api.client.post(f"/fhir/{rtype_name}", json=bad_resource)
        assert refused.status_code == 422, refused.text
        assert refused.json()["issue"][0]["diagnostics"].startswith(f"{key}:")


async def test_extension_only_required_codes_and_strings_inside_elements(api: ApiHarness) -> None:
    absent = {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]
    }
    request = _medication_request()
    del request["intent"]
    request["_intent"] = absent
    response = await api.client.post("/fhir/MedicationRequest", json=request)
    assert response.status_code == 201, response.text
    assert response.json()["_intent"] == absent
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "statusHistory": [{"_status": absent, "period": {"start": "2024-01-01"}}],
    }
    response = await api.client.post("/fhir/Encounter", json=encounter)
    assert response.status_code == 201, response.text
    # An extension does not excuse a value outside the binding.
    request["intent"] = "bogus"
    response = await api.client.post("/fhir/MedicationRequest", json=request)
    assert response.status_code == 400 and _codes(response) == [("code-invalid", "MedicationRequest.intent")]
