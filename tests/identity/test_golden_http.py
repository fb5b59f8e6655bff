"""Golden records, review and merge over HTTP, on both store backends (README "Identity")."""

from __future__ import annotations

import json
from typing import Any

from gateway.identity import REVIEW_TASK_CODE
from gateway.store import GOLDEN_TAG_SYSTEM
from tests.identity.conftest import cht_person, commcare_case
from tests.identity.test_identity_http import WILFRID_ON_CHT, _ingest, _patient, _patient_id
from tests.ingest.conftest import Harness, sample

REVIEWS = f"urn:chw-gateway:task|{REVIEW_TASK_CODE}"
FHIR = {"Content-Type": "application/fhir+json"}


def _links(patient: dict[str, Any], kind: str) -> list[str]:
    return [link["other"]["reference"].partition("/")[2] for link in patient.get("link", []) if link["type"] == kind]


def _golden_of(patient: dict[str, Any]) -> str:
    (golden,) = _links(patient, "refer")
    return golden


async def _goldens(gw: Harness) -> list[dict[str, Any]]:
    params = {"_tag": f"{GOLDEN_TAG_SYSTEM}|golden", "active": "true"}
    found = (await gw.fhir.get("/fhir/Patient", params=params)).json()
    return [e["resource"] for e in found.get("entry", [])]


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**resource, "meta": meta}


async def test_one_person_from_commcare_and_cht_has_one_golden_record(gw: Harness) -> None:
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    cht = _patient_id(await _ingest(gw, "cht", cht_person(**WILFRID_ON_CHT)))
    first, second = await _patient(gw, commcare), await _patient(gw, cht)
    golden_id = _golden_of(first)
    assert _golden_of(second) == golden_id
    golden = await _patient(gw, golden_id)
    assert golden["meta"]["tag"][0]["system"] == GOLDEN_TAG_SYSTEM and golden["active"] is True
    assert sorted(_links(golden, "seealso")) == sorted([commcare, cht])
    # survivorship: identifiers are the union of both records', the birth date is the full one
    assert {i["value"] for i in golden["identifier"]} >= {i["value"] for i in first["identifier"]} | {
        i["value"] for i in second["identifier"]}
    assert golden["birthDate"] == "1979-08-21"
    assert [g["id"] for g in await _goldens(gw)] == [golden_id]


TWIN = {"date_of_birth": "2022-11-03", "sex": "female", "phone": "+256772000111"}
TWIN_ID = json.loads(sample("cht", "person-patient"))["doc"]["_id"]
OTHER_TWIN = {**TWIN, "name": "Amina Nakato", "short_name": "Amina", "patient_id": "48214",
              "_id": "a1a2a3a4-b1b2-4c1c-8d1d-e1e2e3e4e5e6"}


async def _twins(gw: Harness) -> tuple[str, str]:
    aisha = _patient_id(await _ingest(gw, "cht", cht_person(**TWIN)))
    amina = _patient_id(await _ingest(gw, "cht", cht_person(**OTHER_TWIN)))
    return aisha, amina


async def test_twins_keep_two_golden_records_and_the_review_lists_the_evidence(gw: Harness) -> None:
    aisha, amina = await _twins(gw)
    assert _golden_of(await _patient(gw, aisha)) != _golden_of(await _patient(gw, amina))
    assert len(await _goldens(gw)) == 2
    admin = gw.client("admin")
    listed = (await admin.get("/admin/identity/reviews")).json()["items"]
    (pair,) = listed
    assert sorted(pair["patients"]) == sorted([aisha, amina]) and pair["status"] == "pending"
    evidence = {e["field"]: e for e in pair["evidence"]}
    assert evidence["given"]["level"] == "different" and sorted(evidence["given"]["values"]) == ["Aisha", "Amina"]
    assert evidence["birthdate"] == {"field": "birthdate", "level": "exact", "values": ["2022-11-03"] * 2}
    shown = (await admin.get(f"/admin/identity/reviews/{pair['id']}")).json()
    assert shown == pair
    missing = await admin.get("/admin/identity/reviews/no-such-pair")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert (await gw.fhir.get("/admin/identity/reviews")).status_code == 403


async def test_accept_links_and_reject_takes_it_back_each_recorded(gw: Harness) -> None:
    aisha, amina = await _twins(gw)
    admin = gw.client("admin")
    (pair,) = (await admin.get("/admin/identity/reviews")).json()["items"]
    before = {pid: await _patient(gw, pid) for pid in (aisha, amina)}

    accepted = await admin.post(f"/admin/identity/reviews/{pair['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    first, second = await _patient(gw, aisha), await _patient(gw, amina)
    assert _links(first, "seealso") == [amina] and _golden_of(first) == _golden_of(second)
    assert len(await _goldens(gw)) == 1
    provenance = (await gw.fhir.get(f"/fhir/{accepted.json()['provenance']}")).json()
    assert provenance["activity"]["coding"][0]["code"] == "link"
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "admin-client" or provenance["agent"][0]["who"]
    assert {t["reference"].rsplit("/_history/", 1)[0] for t in provenance["target"]} >= {
        f"Patient/{aisha}", f"Patient/{amina}", f"Task/{pair['id']}"}
    again = await admin.post(f"/admin/identity/reviews/{pair['id']}/accept")
    assert again.status_code == 409
    assert (await admin.get("/admin/identity/reviews")).json()["items"] == []

    rejected = await admin.post(f"/admin/identity/reviews/{pair['id']}/reject")
    assert rejected.status_code == 200, rejected.text
    first, second = await _patient(gw, aisha), await _patient(gw, amina)
    assert _links(first, "seealso") == [] and _golden_of(first) != _golden_of(second)
    assert len(await _goldens(gw)) == 2
    # the records are back to their content before the accept
    for pid, record in ((aisha, first), (amina, second)):
        assert _content(record) == _content(before[pid]) or _links(record, "refer") != _links(before[pid], "refer")
    (listed,) = (await admin.get("/admin/identity/reviews", params={"status": "rejected"})).json()["items"]
    assert listed["id"] == pair["id"]
    # a rejected pair stays rejected when one record changes and is matched again
    await _ingest(gw, "cht", cht_person(**{**TWIN, "phone": "+256772000112"}))
    (still,) = (await admin.get("/admin/identity/reviews", params={"status": "all"})).json()["items"]
    assert still["status"] == "rejected"


async def test_merge_and_unmerge_round_trip_exactly(gw: Harness) -> None:
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    aisha, amina = await _twins(gw)
    everyone = [commcare, aisha, amina]
    goldens = {pid: _golden_of(await _patient(gw, pid)) for pid in everyone}
    before = {pid: _content(await _patient(gw, pid)) for pid in [*everyone, *goldens.values()]}
    admin = gw.client("admin")

    merged = await admin.post("/admin/identity/merge", json={"survivor": aisha, "loser": amina})
    assert merged.status_code == 200, merged.text
    survivor, loser = await _patient(gw, aisha), await _patient(gw, amina)
    assert _links(loser, "replaced-by") == [aisha] and _links(survivor, "replaces") == [amina]
    golden = _golden_of(survivor)
    assert golden == goldens[aisha] and _golden_of(loser) == golden
    retired = await _patient(gw, goldens[amina])
    assert retired["active"] is False and _links(retired, "replaced-by") == [golden]
    assert amina in _links(await _patient(gw, golden), "seealso")
    provenance = (await gw.fhir.get(f"/fhir/{merged.json()['provenance']}")).json()
    assert provenance["activity"]["coding"][0]["code"] == "merge"
    assert {e["what"]["reference"].rsplit("/_history/", 1)[0] for e in provenance["entity"]} >= {
        f"Patient/{aisha}", f"Patient/{amina}", f"Patient/{goldens[amina]}"}
    twice = await admin.post("/admin/identity/merge", json={"survivor": aisha, "loser": amina})
    assert twice.status_code == 409
    golden_merge = await admin.post("/admin/identity/merge", json={"survivor": golden, "loser": commcare})
    assert golden_merge.status_code == 409 and "golden" in golden_merge.text

    unmerged = await admin.post("/admin/identity/unmerge", json={"patient": amina})
    assert unmerged.status_code == 200, unmerged.text
    after = {pid: _content(await _patient(gw, pid)) for pid in before}
    assert after == before
    undo = (await gw.fhir.get(f"/fhir/{unmerged.json()['provenance']}")).json()
    assert undo["activity"]["coding"][0]["code"] == "unmerge"
    assert (await admin.post("/admin/identity/unmerge", json={"patient": amina})).status_code == 409
    bad = await admin.post("/admin/identity/merge", json={"survivor": aisha})
    assert bad.status_code in (400, 422) and "loser" in bad.text

    writer = gw.app.state.ctx.services.audit
    assert writer is not None and await writer.flush()
    events = (await admin.get(
        "/fhir/AuditEvent", params={"patient": f"Patient/{amina}", "_count": "50"})).json()
    codes = [e["resource"]["subtype"][0]["code"] for e in events.get("entry", [])]
    assert codes.count("identity-merge") == 2 and codes.count("identity-unmerge") == 2  # the refused ones too


async def test_everything_of_a_golden_record_includes_every_linked_records_data(gw: Harness) -> None:
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    cht = _patient_id(await _ingest(gw, "cht", cht_person(**WILFRID_ON_CHT)))
    aisha = _patient_id(await _ingest(gw, "cht", cht_person()))
    writer = gw.client("system/Observation.cruds")
    made = []
    for pid in (commcare, cht, aisha):
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
               "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 60, "unit": "kg"}}
        created = await writer.post("/fhir/Observation", json=obs, headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.text
        made.append(created.json()["id"])
    golden = _golden_of(await _patient(gw, commcare))
    bundle = (await gw.fhir.get(f"/fhir/Patient/{golden}/$everything")).json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert {("Observation", made[0]), ("Observation", made[1])} <= found
    assert ("Observation", made[2]) not in found  # another person's
    assert {("Patient", golden), ("Patient", commcare), ("Patient", cht)} <= found
    # a source record's own $everything is unchanged: its own data only
    own = (await gw.fhir.get(f"/fhir/Patient/{cht}/$everything")).json()
    assert ("Observation", made[0]) not in {(e["resource"]["resourceType"], e["resource"]["id"]) for e in own["entry"]}


async def test_a_deleted_record_leaves_its_golden_record_and_a_rejected_pair_stays_apart(gw: Harness) -> None:
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    cht = _patient_id(await _ingest(gw, "cht", cht_person(**WILFRID_ON_CHT)))
    admin, writer = gw.client("admin"), gw.client("system/Patient.cruds")
    unlinked = await admin.post("/admin/identity/unlink", json={"patients": [commcare, cht]})
    assert unlinked.status_code == 200, unlinked.text
    assert _links(await _patient(gw, commcare), "seealso") == [] and len(await _goldens(gw)) == 2
    # the CHT record changes: it is matched again, and the pair the reviewer split stays split
    await _ingest(gw, "cht", cht_person(**{**WILFRID_ON_CHT, "phone": "3700 0001"}))
    assert _links(await _patient(gw, cht), "seealso") == []
    (pair,) = (await admin.get("/admin/identity/reviews", params={"status": "rejected"})).json()["items"]
    assert sorted(pair["patients"]) == sorted([commcare, cht])

    assert (await admin.post(f"/admin/identity/reviews/{pair['id']}/accept")).status_code == 200
    golden = _golden_of(await _patient(gw, cht))
    assert _golden_of(await _patient(gw, commcare)) == golden and len(await _goldens(gw)) == 1
    assert _links(await _patient(gw, commcare), "seealso") == [cht]
    assert (await writer.delete(f"/fhir/Patient/{cht}")).status_code in (200, 204)
    assert _links(await _patient(gw, golden), "seealso") == [commcare]
    left = await _patient(gw, commcare)
    assert _links(left, "seealso") == [] and _golden_of(left) == golden  # no link to a deleted record
    assert (await writer.delete(f"/fhir/Patient/{commcare}")).status_code in (200, 204)
    assert (await gw.fhir.get(f"/fhir/Patient/{golden}")).status_code == 410


async def test_unmerge_after_a_source_edit_keeps_the_edit(gw: Harness) -> None:
    aisha, amina = await _twins(gw)
    goldens = {pid: _golden_of(await _patient(gw, pid)) for pid in (aisha, amina)}
    admin = gw.client("admin")
    merged = await admin.post("/admin/identity/merge", json={"survivor": aisha, "loser": amina})
    assert merged.status_code == 200, merged.text
    await _ingest(gw, "cht", cht_person(**{**TWIN, "phone": "+256772000999", "_rev": "2-b"}))
    survivor = await _patient(gw, aisha)
    assert [t["value"] for t in survivor["telecom"]] == ["+256772000999"]

    unmerged = await admin.post("/admin/identity/unmerge", json={"patient": amina})
    assert unmerged.status_code == 200, unmerged.text
    survivor, loser = await _patient(gw, aisha), await _patient(gw, amina)
    assert [t["value"] for t in survivor["telecom"]] == ["+256772000999"]  # the CHW's correction stays
    assert _links(survivor, "replaces") == [] and _links(loser, "replaced-by") == []
    assert _golden_of(survivor) == goldens[aisha] and _golden_of(loser) == goldens[amina]
    golden = await _patient(gw, goldens[aisha])
    assert [t["value"] for t in golden["telecom"]] == ["+256772000999"] and golden["active"] is True
    assert (await _patient(gw, goldens[amina]))["active"] is True
    assert sorted(g["id"] for g in await _goldens(gw)) == sorted(goldens.values())


async def test_unmerge_does_not_bring_back_a_record_deleted_at_the_source(gw: Harness) -> None:
    aisha, amina = await _twins(gw)
    admin = gw.client("admin")
    merged = await admin.post("/admin/identity/merge", json={"survivor": aisha, "loser": amina})
    assert merged.status_code == 200, merged.text
    deleted = {"doc": {"_id": TWIN_ID, "_rev": "3-c", "_deleted": True}}  # the survivor goes in CHT
    await _ingest(gw, "cht", json.dumps(deleted).encode())
    assert (await gw.fhir.get(f"/fhir/Patient/{aisha}")).status_code == 410

    unmerged = await admin.post("/admin/identity/unmerge", json={"patient": amina})
    assert unmerged.status_code == 200, unmerged.text
    assert (await gw.fhir.get(f"/fhir/Patient/{aisha}")).status_code == 410
    loser = await _patient(gw, amina)
    assert _links(loser, "replaced-by") == []
    golden = await _patient(gw, _golden_of(loser))
    assert golden["active"] is True and _links(golden, "seealso") == [amina]


async def test_a_source_edit_of_an_element_the_matcher_does_not_compare_reaches_the_golden_record(
    gw: Harness,
) -> None:
    """Survivorship copies identifiers, addresses and the managing organization, which the matcher
    does not compare: a source that corrects one (a mistyped patient id, a new village) left the
    golden record showing the old value for ever (it was redone only when compared values changed)."""
    patient = {"resourceType": "Patient", "name": [{"given": ["Claudine"], "family": "Mukamana"}],
               "gender": "female", "birthDate": "1991-02-17",
               "identifier": [{"system": "urn:example:clinic-number", "value": "KC-1207"}],
               "address": [{"line": ["Umudugudu wa Kabeza"], "district": "Gasabo"}]}
    writer = gw.client("system/Patient.cruds")
    created = await writer.post("/fhir/Patient", json=patient, headers=FHIR)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    golden = await _patient(gw, _golden_of(await _patient(gw, pid)))
    assert [i["value"] for i in golden["identifier"]] == ["KC-1207"]
    current = await _patient(gw, pid)
    corrected = {**current, "identifier": [{"system": "urn:example:clinic-number", "value": "KC-1270"}],
                 "address": [{"line": ["Umudugudu wa Rukiri"], "district": "Gasabo"}]}
    updated = await writer.put(f"/fhir/Patient/{pid}", json=corrected, headers=FHIR)
    assert updated.status_code == 200, updated.text
    golden = await _patient(gw, _golden_of(await _patient(gw, pid)))
    assert [i["value"] for i in golden["identifier"]] == ["KC-1270"]
    assert golden["address"][0]["line"] == ["Umudugudu wa Rukiri"]


async def test_clients_may_not_write_golden_records_nor_tag_a_patient_golden(gw: Harness) -> None:
    # A client with Patient write rights could overwrite or delete a golden record (members then
    # referred to nothing) or forge one (matching and destinations skip golden records).
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    cht = _patient_id(await _ingest(gw, "cht", cht_person(**WILFRID_ON_CHT)))
    golden_id = _golden_of(await _patient(gw, commcare))
    golden = await _patient(gw, golden_id)
    edited = {**_content(golden), "gender": "other"}
    writer = gw.client("system/*.cruds")
    refusals = [
        await writer.put(f"/fhir/Patient/{golden_id}", json=edited, headers=FHIR),
        await writer.patch(f"/fhir/Patient/{golden_id}", headers={"Content-Type": "application/json-patch+json"},
                            json=[{"op": "replace", "path": "/gender", "value": "other"}]),
        await writer.delete(f"/fhir/Patient/{golden_id}"),
        await writer.delete("/fhir/Patient", params={"_id": golden_id}),
        await writer.put("/fhir/Patient", params={"_id": golden_id}, json=edited, headers=FHIR),
        await writer.post("/fhir/Patient", headers=FHIR, json={
            "resourceType": "Patient", "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": "golden"}]}}),
        await writer.post("/fhir", headers=FHIR, json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": f"Patient/{golden_id}"}}]}),
    ]  # fmt: skip
    for response in refusals:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        assert "golden record" in response.json()["issue"][0]["diagnostics"]
    batch = await writer.post("/fhir", headers=FHIR, json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "PUT", "url": f"Patient/{golden_id}"}, "resource": edited}]})  # fmt: skip
    assert batch.json()["entry"][0]["response"]["status"].startswith("403")
    assert _content(await _patient(gw, golden_id)) == _content(golden)  # untouched
    # The source records stay the clients' to edit.
    source = _content(await _patient(gw, cht))
    answer = await writer.put(f"/fhir/Patient/{cht}", json={**source, "gender": "male"}, headers=FHIR)
    assert answer.status_code == 200, answer.text
