"""A null attribute value deletes that value in DHIS2, but a mandatory one can never be deleted:
dhis2-core answers E1076 ("`TrackedEntityAttribute` `<uid>` is mandatory and must be specified")
for a tracked entity type's mandatory attribute on a tracked entity and for a program's mandatory
attribute on an enrollment. A sandbox that deleted the value would hide a connector clearing one."""

from __future__ import annotations

import httpx

from tests.sandbox.conftest import Demo

SYNC = {"async": "false", "atomicMode": "OBJECT"}


async def test_null_for_a_mandatory_attribute_is_refused_and_the_value_kept(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    bundle = demo.bundle(1, prefix="M")
    assert (await client.post("/api/tracker", params=SYNC, json=bundle)).status_code == 200
    te = bundle["trackedEntities"][0]
    en = bundle["enrollments"][0]
    client_id, phone = demo.tea("CHW_CLIENT_ID"), demo.tea("PHONE")

    cleared = {**te, "attributes": [{"attribute": client_id, "value": None}]}
    response = await client.post("/api/tracker", params=SYNC, json={"trackedEntities": [cleared]})
    assert response.status_code == 409
    (error,) = response.json()["validationReport"]["errorReports"]
    assert (error["errorCode"], error["uid"]) == ("E1076", te["trackedEntity"])
    assert client_id in error["message"]

    cleared_en = {**en, "attributes": [{"attribute": demo.tea("SEX"), "value": None}]}
    response = await client.post("/api/tracker", params=SYNC, json={"enrollments": [cleared_en]})
    assert response.status_code == 409
    (error,) = response.json()["validationReport"]["errorReports"]
    assert (error["errorCode"], error["uid"]) == ("E1076", en["enrollment"])

    stored = (await client.get(f"/api/tracker/trackedEntities/{te['trackedEntity']}")).json()
    values = {a["attribute"]: a["value"] for a in stored["attributes"]}
    assert values[client_id] == "M-0" and values[demo.tea("SEX")] == "FEMALE"

    # A value that is not mandatory is deleted by null, as DHIS2 documents.
    with_phone = {**te, "attributes": [{"attribute": phone, "value": "+254700000001"}]}
    assert (await client.post("/api/tracker", params=SYNC, json={"trackedEntities": [with_phone]})).status_code == 200
    without = {**te, "attributes": [{"attribute": phone, "value": None}]}
    assert (await client.post("/api/tracker", params=SYNC, json={"trackedEntities": [without]})).status_code == 200
    stored = (await client.get(f"/api/tracker/trackedEntities/{te['trackedEntity']}")).json()
    assert phone not in {a["attribute"] for a in stored["attributes"]}


async def test_null_for_a_compulsory_data_element_is_e1076_where_dhis2_validates_data_values(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    """dhis2-core ``validateNullDataValues``: a null value of a compulsory program stage data element
    is E1076 ("`DataElement` `<uid>` is mandatory …") when the event's data values are validated
    (COMPLETED, or a stage validated ON_UPDATE_AND_INSERT); the element is in the payload, so it is
    not reported missing (E1303). An ACTIVE event of an ON_COMPLETE stage may clear it."""
    bundle = demo.bundle(1, prefix="N")
    assert (await client.post("/api/tracker", params=SYNC, json=bundle)).status_code == 200
    event = bundle["events"][0]
    visit_type = demo.de("CHW_VISIT_TYPE")
    nulled = {**event, "dataValues": [{"dataElement": visit_type, "value": None}]}

    response = await client.post("/api/tracker", params=SYNC, json={"events": [nulled]})
    assert response.status_code == 409
    errors = response.json()["validationReport"]["errorReports"]
    assert [(e["errorCode"], e["uid"]) for e in errors] == [("E1076", event["event"])]
    assert "DataElement" in errors[0]["message"] and visit_type in errors[0]["message"]

    active = {**nulled, "status": "ACTIVE"}
    assert (await client.post("/api/tracker", params=SYNC, json={"events": [active]})).status_code == 200
    stored = (await client.get(f"/api/tracker/events/{event['event']}")).json()
    assert visit_type not in {v["dataElement"] for v in stored["dataValues"]}
