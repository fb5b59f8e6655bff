"""Quarantine → fix the mapping → reload → replay, over HTTP; and the admin endpoints."""

from __future__ import annotations

import json

from tests.ingest.conftest import Harness, sample

JSON = {"Content-Type": "application/json"}


def _with_new_danger_sign() -> bytes:
    record = json.loads(sample("cht", "report-data-record-assessment"))
    record["doc"]["fields"]["group_danger_signs"]["danger_signs"] = "unable_to_feed chest_pain"
    return json.dumps(record).encode()


async def test_quarantine_fix_mapping_replay(gw: Harness) -> None:
    # 1. A form gained an answer option the ConceptMap does not know: the record is kept.
    response = await gw.sender.post("/ingest/cht", content=_with_new_danger_sign(), headers=JSON)
    assert response.status_code == 202
    (result,) = response.json()["results"]
    qid = result["quarantine_id"]
    assert result["outcome"]["issue"][0]["code"] == "code-invalid"
    assert "chest_pain" in result["outcome"]["issue"][0]["diagnostics"]

    listing = (await gw.admin.get("/admin/quarantine", params={"source": "cht"})).json()
    assert [item["id"] for item in listing["items"]] == [qid]
    assert listing["items"][0]["record"] == "0196c7a2-5d3e-7b41-9f2a-6c8e1d4b3a21"
    assert "body" not in listing["items"][0]
    detail = (await gw.admin.get(f"/admin/quarantine/{qid}")).json()
    assert json.loads(detail["body"])["doc"]["_id"] == "0196c7a2-5d3e-7b41-9f2a-6c8e1d4b3a21"

    # 2. Replaying before the fix fails again and keeps it held.
    again = await gw.admin.post(f"/admin/quarantine/{qid}/replay")
    assert again.status_code == 422
    assert gw.store.quarantine_get(qid).status == "held"  # type: ignore[union-attr]

    # 3. The integrator adds the code to the ConceptMap and reloads the mappings.
    table = gw.root / "conceptmaps" / "danger-signs.yaml"
    table.write_text(
        table.read_text().replace(
            "      - {code: none, target: [{equivalence: unmatched}]}",
            "      - {code: none, target: [{equivalence: unmatched}]}\n"
            "      - {code: chest_pain, display: Chest pain,"
            ' target: [{code: "29857009", display: Chest pain, equivalence: equivalent}]}',
        )
    )
    reload = await gw.admin.post("/admin/mappings/reload")
    assert reload.status_code == 200, reload.text

    # 4. Replay stores it; it leaves the held list.
    replayed = await gw.admin.post(f"/admin/quarantine/{qid}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "stored"
    observation_ids = [r["id"] for r in replayed.json()["resources"] if r["type"] == "Observation"]
    codes = []
    for oid in observation_ids:
        codes.append((await gw.fhir.get(f"/fhir/Observation/{oid}")).json()["code"]["coding"][0]["code"])
    assert "29857009" in codes
    assert (await gw.admin.get("/admin/quarantine")).json()["items"] == []
    everything = (await gw.admin.get("/admin/quarantine", params={"status": "all"})).json()["items"]
    assert [(item["id"], item["status"], item["attempts"]) for item in everything] == [(qid, "replayed", 3)]
    assert (await gw.admin.post(f"/admin/quarantine/{qid}/replay")).status_code == 409


async def test_replay_all_and_discard(gw: Harness) -> None:
    for _ in range(2):
        await gw.sender.post("/ingest/cht", content=_with_new_danger_sign(), headers=JSON)
    bad = json.loads(sample("cht", "person-patient"))
    bad["doc"]["reported_date"] = "yesterday"
    await gw.sender.post("/ingest/cht", content=json.dumps(bad).encode(), headers=JSON)
    items = (await gw.admin.get("/admin/quarantine")).json()["items"]
    held = [item["id"] for item in items]
    assert len(held) == 2  # the record sent twice is held once
    assert (await gw.admin.get(f"/admin/quarantine/{held[0]}")).json()["attempts"] == 2
    assert (await gw.admin.post(f"/admin/quarantine/{held[1]}/discard")).status_code == 204
    summary = (await gw.admin.post("/admin/quarantine/replay", params={"source": "cht"})).json()
    assert (summary["replayed"], summary["still_held"]) == (0, 1)
    assert (await gw.admin.post("/admin/quarantine/999/discard")).status_code == 404


async def test_broken_mapping_is_not_loaded_and_ingest_keeps_working(gw: Harness) -> None:
    mapping = gw.root / "cht" / "person.yaml"
    mapping.write_text(mapping.read_text().replace("| human_name", "| humane_name"))
    reload = await gw.admin.post("/admin/mappings/reload")
    assert reload.status_code == 422
    assert "person.yaml:" in reload.json()["issue"][0]["diagnostics"]
    assert "humane_name" in reload.json()["issue"][0]["diagnostics"]
    response = await gw.sender.post("/ingest/cht", content=sample("cht", "person-patient"), headers=JSON)
    assert response.status_code == 200


async def test_admin_endpoints_need_the_admin_scope(gw: Harness) -> None:
    for method, path in [
        ("GET", "/admin/quarantine"),
        ("GET", "/admin/quarantine/1"),
        ("POST", "/admin/quarantine/1/replay"),
        ("POST", "/admin/quarantine/replay"),
        ("POST", "/admin/quarantine/1/discard"),
        ("POST", "/admin/mappings/reload"),
    ]:
        assert (await gw.sender.request(method, path)).status_code == 403, path
    assert (await gw.admin.get("/admin/quarantine/12345")).status_code == 404
    assert (await gw.admin.get("/admin/quarantine", params={"limit": 0})).status_code == 400
