"""Retractions over HTTP, on both store backends: an edit or a deletion at the source takes back
what an earlier version of the record produced."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store
from tests.ingest.conftest import Harness, make_app, sample

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def both(store: Store, mappings_copy: Path) -> AsyncIterator[Harness]:
    """The ingest app on the SQLite and on the PostgreSQL store."""
    app = make_app(store, mappings_copy)
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, mappings_copy)
        yield harness
        await harness.aclose()


async def _post(gw: Harness, source: str, record: Any) -> dict[str, Any]:
    body = record if isinstance(record, bytes) else json.dumps(record).encode()
    response = await gw.sender.post(f"/ingest/{source}", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def _written(report: dict[str, Any]) -> list[dict[str, str]]:
    return [r for result in report["results"] for r in result.get("resources", [])]


async def _read(gw: Harness, rtype: str, rid: str) -> dict[str, Any]:
    response = await gw.fhir.get(f"/fhir/{rtype}/{rid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assessment() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(sample("cht", "report-data-record-assessment"))
    return record


def _no_referral_no_danger(record: dict[str, Any]) -> dict[str, Any]:
    edited = copy.deepcopy(record)
    edited["doc"]["_rev"] = "2-edited"
    edited["doc"]["fields"]["group_referral"]["refer_to_facility"] = "no"
    edited["doc"]["fields"]["group_danger_signs"]["danger_signs"] = ""
    return edited


async def test_an_edit_takes_back_the_referral_and_the_danger_signs(both: Harness) -> None:
    first = await _post(both, "cht", _assessment())
    made = {(r["type"], r["id"]) for r in _written(first)}
    referral = [r for r in _written(first) if r["type"] in ("ServiceRequest", "Task")]
    assert {r["type"] for r in referral} == {"ServiceRequest", "Task"}
    danger = [
        r["id"] for r in _written(first)
        if r["type"] == "Observation"
        and "Ccc.B7.DE" in json.dumps((await _read(both, "Observation", r["id"]))["code"])
    ]  # fmt: skip
    assert danger, "the sample has danger signs"

    edit = await _post(both, "cht", _no_referral_no_danger(_assessment()))
    (result,) = edit["results"]
    assert result["status"] == "stored"
    taken_back = {(r["type"], r["id"]): r for r in result["resources"] if r["change"] == "retracted"}
    assert {("ServiceRequest", r["id"]) for r in referral if r["type"] == "ServiceRequest"} <= set(taken_back)
    service_request = next(r for r in referral if r["type"] == "ServiceRequest")
    task = next(r for r in referral if r["type"] == "Task")
    sr = await _read(both, "ServiceRequest", service_request["id"])
    assert sr["status"] == "revoked" and sr["meta"]["versionId"] == "2"
    assert (await _read(both, "Task", task["id"]))["status"] == "cancelled"
    for oid in danger:
        observation = await _read(both, "Observation", oid)
        assert observation["status"] == "entered-in-error"
        assert ("Observation", oid) in taken_back
    # what the edit still produces is untouched, and nothing else was taken back
    still = {(r["type"], r["id"]) for r in result["resources"] if r["change"] != "retracted"}
    assert set(taken_back) == made - still - {(t, i) for t, i in made if t == "Provenance"}

    # one Provenance says what was taken back, why, and from which record
    search = await both.fhir.get("/fhir/Provenance", params={"target": f"ServiceRequest/{service_request['id']}"})
    provenances = [e["resource"] for e in search.json().get("entry", [])]
    nullify = [p for p in provenances if p.get("activity", {}).get("coding", [{}])[0].get("code") == "NULLIFY"]
    assert len(nullify) == 1
    assert f"ServiceRequest/{service_request['id']}/_history/2" in {t["reference"] for t in nullify[0]["target"]}
    assert nullify[0]["entity"][0]["what"]["identifier"]["value"] == _assessment()["doc"]["_id"]

    # sending the edit again changes nothing; sending the first version again restores it
    again = await _post(both, "cht", _no_referral_no_danger(_assessment()))
    assert again["results"][0]["status"] == "unchanged"
    restored = await _post(both, "cht", _assessment())
    assert restored["results"][0]["status"] == "stored"
    assert (await _read(both, "ServiceRequest", service_request["id"]))["status"] == "active"


async def test_a_deleted_cht_document_takes_back_everything_it_produced(both: Harness) -> None:
    record = _assessment()
    first = await _post(both, "cht", record)
    produced = [r for r in _written(first) if r["type"] != "Provenance"]
    deleted = {"doc": {"_id": record["doc"]["_id"], "_rev": "3-deleted", "_deleted": True}}
    report = await _post(both, "cht", deleted)
    assert report["deleted"] == 1 and report["quarantined"] == 0
    (result,) = report["results"]
    assert result["status"] == "deleted" and result["record"] == record["doc"]["_id"]
    assert {(r["type"], r["id"]) for r in result["resources"]} == {(r["type"], r["id"]) for r in produced}
    for r in produced:
        response = await both.fhir.get(f"/fhir/{r['type']}/{r['id']}")
        if r["type"] in ("Encounter", "Observation", "Condition", "MedicationDispense"):
            body = response.json()
            status = body.get("status") or body["verificationStatus"]["coding"][0]["code"]
            assert status == "entered-in-error", r
        elif r["type"] in ("ServiceRequest", "Task"):
            assert response.json()["status"] in ("revoked", "cancelled")
        else:
            assert response.status_code == 410, r  # no status to say it: deleted
    # the deletion repeated is harmless
    again = await _post(both, "cht", deleted)
    assert again["results"][0]["status"] == "deleted" and "resources" not in again["results"][0]


async def test_a_shared_resource_stays_while_another_record_produces_it(both: Harness) -> None:
    # two Kobo visits of the same patient by the same CHW: both produce the Patient and the
    # Practitioner (rules with `id`); rejecting one visit keeps them, rejecting both does not
    first: dict[str, Any] = json.loads(sample("kobo", "hypertension-visit"))
    second = copy.deepcopy(first)
    second["meta/rootUuid"] = "uuid:0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    second["meta/instanceID"] = second["meta/rootUuid"]
    second["_uuid"] = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    second["_id"] = first["_id"] + 1
    one = await _post(both, "kobo", first)
    await _post(both, "kobo", second)
    patient = next(r["id"] for r in _written(one) if r["type"] == "Patient")
    practitioner = next(r["id"] for r in _written(one) if r["type"] == "Practitioner")

    rejected = {**first, "_validation_status": {"uid": "validation_status_not_approved", "label": "Not Approved"}}
    report = await _post(both, "kobo", rejected)
    assert report["deleted"] == 1
    taken = {(r["type"], r["id"]) for r in report["results"][0]["resources"]}
    assert ("Patient", patient) not in taken and ("Practitioner", practitioner) not in taken
    assert (await both.fhir.get(f"/fhir/Patient/{patient}")).status_code == 200

    rejected_too = {**second, "_validation_status": {"uid": "validation_status_not_approved"}}
    report = await _post(both, "kobo", rejected_too)
    taken = {(r["type"], r["id"]) for r in report["results"][0]["resources"]}
    assert ("Patient", patient) in taken and ("Practitioner", practitioner) in taken
    assert (await both.fhir.get(f"/fhir/Patient/{patient}")).status_code == 410


@pytest.mark.parametrize(
    ("source", "case", "void"),
    [
        ("commcare", "tb-dot-visit", lambda r: {**r, "archived": True}),
        ("commcare", "tb-patient-case", lambda r: {**r, "closed": True}),
        ("odk", "household-visit-expanded",
         lambda r: {**r, "__system": {**r["__system"], "deletedAt": "2025-06-01T10:00:00.000Z"}}),
        ("odk", "household-visit-expanded",
         lambda r: {**r, "__system": {**r["__system"], "reviewState": "rejected"}}),
        ("kobo", "hypertension-visit",
         lambda r: {**r, "_validation_status": {"uid": "validation_status_not_approved"}}),
    ],
    ids=["commcare-archived-form", "commcare-closed-case", "odk-deleted", "odk-rejected", "kobo-not-approved"],
)  # fmt: skip
async def test_each_source_kind_can_void_a_record(both: Harness, source: str, case: str, void: Any) -> None:
    record: dict[str, Any] = json.loads(sample(source, case))
    first = await _post(both, source, record)
    produced = {(r["type"], r["id"]) for r in _written(first) if r["type"] != "Provenance"}
    report = await _post(both, source, void(record))
    (result,) = report["results"]
    assert result["status"] == "deleted"
    assert {(r["type"], r["id"]) for r in result["resources"]} == produced
    for rtype, rid in produced:
        response = await both.fhir.get(f"/fhir/{rtype}/{rid}")
        assert response.status_code == 410 or response.json().get("status") in (
            "entered-in-error", "revoked", "cancelled", None
        ), (rtype, response.json())  # fmt: skip


async def test_a_closed_case_leaves_the_location_its_visits_are_at(both: Harness) -> None:
    # The CHW location's Organization is made by the cases that name it (`location_id`) and is
    # where the visit forms take place (Encounter.serviceProvider: the DHIS2 org unit of the visit
    # and of the monthly report). Closing the last case of a location does not remove the place:
    # its visits must still resolve to it, and the next visit there must not wait for it forever.
    case: dict[str, Any] = json.loads(sample("commcare", "tb-patient-case-located"))
    visit: dict[str, Any] = json.loads(sample("commcare", "tb-dot-visit-located"))
    first = await _post(both, "commcare", case)
    (place,) = [r["id"] for r in _written(first) if r["type"] == "Organization"]
    encounter = next(r for r in _written(await _post(both, "commcare", visit)) if r["type"] == "Encounter")
    where = (await _read(both, "Encounter", encounter["id"]))["serviceProvider"]
    assert where == {"reference": f"Organization/{place}"}

    closed = {**case, "closed": True, "server_date_modified": "2099-01-01T00:00:00Z"}
    report = await _post(both, "commcare", closed)
    assert report["deleted"] == 1
    assert ("Organization", place) not in {(r["type"], r["id"]) for r in _written(report)}
    assert (await _read(both, "Organization", place))["active"] is True


async def test_delete_endpoint_takes_back_a_record_whose_source_cannot_say_so(both: Harness) -> None:
    record: dict[str, Any] = json.loads(sample("kobo", "hypertension-visit"))
    first = await _post(both, "kobo", record)
    key = first["results"][0]["record"]
    encounter = next(r["id"] for r in _written(first) if r["type"] == "Encounter")
    response = await both.sender.delete(f"/ingest/kobo/records/{key}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "deleted" and body["record"] == key and body["source"] == "kobo"
    assert (await _read(both, "Encounter", encounter))["status"] == "entered-in-error"
    # unknown records and sources
    nothing = await both.sender.delete("/ingest/kobo/records/never-seen")
    assert nothing.status_code == 200 and "resources" not in nothing.json()
    unknown = await both.sender.delete(f"/ingest/nope/records/{key}")
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
    # a reader cannot delete
    refused = await both.fhir.delete(f"/ingest/kobo/records/{key}")
    assert refused.status_code == 403


async def test_a_rule_can_keep_or_delete_what_it_made(both: Harness) -> None:
    path = both.root / "cht" / "assessment.yaml"
    text = path.read_text()
    text = text.replace("  - name: referral\n    kind: referral\n",
                        "  - name: referral\n    kind: referral\n    on_retract: keep\n")
    text = text.replace("  - name: temperature\n    kind: observation\n",
                        "  - name: temperature\n    kind: observation\n    on_retract: delete\n")  # fmt: skip
    path.write_text(text)
    app = make_app(both.store, both.root)
    async with app.router.lifespan_context(app):
        gw = Harness(app, both.store, both.root)
        try:
            first = await _post(gw, "cht", _assessment())
            edited = _no_referral_no_danger(_assessment())
            del edited["doc"]["fields"]["group_fever"]["patient_temperature"]
            report = await _post(gw, "cht", edited)
            changes = {r["type"]: r["change"] for r in report["results"][0]["resources"]
                       if r["change"] in ("retracted", "deleted")}  # fmt: skip
            assert "ServiceRequest" not in changes and "Task" not in changes  # kept
            sr = next(r["id"] for r in _written(first) if r["type"] == "ServiceRequest")
            assert (await _read(gw, "ServiceRequest", sr))["status"] == "active"
            deleted = [r for r in report["results"][0]["resources"] if r["change"] == "deleted"]
            assert [r["type"] for r in deleted] == ["Observation"]
            assert (await gw.fhir.get(f"/fhir/Observation/{deleted[0]['id']}")).status_code == 410
        finally:
            await gw.aclose()


async def test_a_record_sent_through_two_sources_of_one_set_is_one_record(both: Harness) -> None:
    """A live push and a second source of the same mapping set (a pull, a backfill, a stricter
    endpoint) make the same resources of the same record: an edit or a deletion through either
    takes back what the record no longer produces, whichever source stored it last."""
    record = _assessment()
    first = await _post(both, "cht", record)
    await _post(both, "cht-strict", record)  # the same record again, through the other source
    referral = next(r for r in _written(first) if r["type"] == "ServiceRequest")

    edit = await _post(both, "cht", _no_referral_no_danger(record))
    retracted = {(r["type"], r["id"]) for r in edit["results"][0]["resources"] if r["change"] == "retracted"}
    assert ("ServiceRequest", referral["id"]) in retracted
    assert (await _read(both, "ServiceRequest", referral["id"]))["status"] == "revoked"

    response = await both.sender.delete(f"/ingest/cht-strict/records/{record['doc']['_id']}")
    assert response.status_code == 200, response.text
    taken = {(r["type"], r["id"]) for r in response.json()["resources"]}
    encounter = next(r for r in _written(first) if r["type"] == "Encounter")
    assert ("Encounter", encounter["id"]) in taken
    assert (await _read(both, "Encounter", encounter["id"]))["status"] == "entered-in-error"


async def test_lists_stored_under_the_source_name_are_still_taken_back(both: Harness) -> None:
    """Lists records left before lists were kept per source system (under the configured
    source's name) are moved under the system by the source's first write after a start, all of
    them at once: an edit of any such record, then or later, still takes back what it made."""
    records = [_assessment(), _assessment()]
    records[1]["doc"]["_id"] = "second-" + records[1]["doc"]["_id"]
    firsts = [await _post(both, "cht", record) for record in records]
    system = "urn:chw-gateway:cht:demo"
    keys = [record["doc"]["_id"] for record in records]
    with both.store.transaction() as tx:  # as a gateway before the fix left them
        for key in keys:
            outputs = tx.record_outputs(system, key)
            assert outputs
            tx.set_record_outputs(system, key, [])
            tx.set_record_outputs("cht", key, outputs)
    app = make_app(both.store, both.root)  # the upgraded gateway starts
    async with app.router.lifespan_context(app):
        gw = Harness(app, both.store, both.root)
        try:
            for first, record in zip(firsts, records, strict=True):
                referral = next(r for r in _written(first) if r["type"] == "ServiceRequest")
                await _post(gw, "cht", _no_referral_no_danger(record))
                assert (await _read(gw, "ServiceRequest", referral["id"]))["status"] == "revoked"
                with both.store.transaction() as tx:
                    assert tx.record_outputs("cht", records[1]["doc"]["_id"]) == []  # all moved at once
                    assert tx.record_outputs(system, record["doc"]["_id"])
        finally:
            await gw.aclose()
