"""``POST /ingest/{source}`` over HTTP: storing, idempotence, ordering, refusals, auth."""

from __future__ import annotations

import csv
import gzip
import io
import json
from typing import Any

import orjson
import pytest

from tests.ingest.conftest import Harness, sample

JSON = {"Content-Type": "application/json"}


async def _post(gw: Harness, source: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await gw.sender.post(f"/ingest/{source}", content=body, headers=headers or JSON)


def _resources(report: dict[str, Any]) -> list[dict[str, str]]:
    return [r for result in report["results"] for r in result.get("resources", [])]


async def test_a_record_is_mapped_validated_and_stored(gw: Harness) -> None:
    response = await _post(gw, "kobo", sample("kobo", "hypertension-visit"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["records"] == 1 and report["stored"] == 1 and report["quarantined"] == 0
    (result,) = report["results"]
    assert result["record"] == "9e3b1c7a-2f4d-4a6e-8b0c-5d1e7f3a9b2c"
    written = result["resources"]
    assert len(written) == 17 and {w["change"] for w in written} == {"created"}
    patient = next(w for w in written if w["type"] == "Patient")
    read = await gw.fhir.get(f"/fhir/Patient/{patient['id']}")
    assert read.status_code == 200
    body = read.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"][0]["code"] == "kobo-hypertension-visit@1.0.0"


async def test_resubmitting_three_times_yields_one_set_of_resources(gw: Harness) -> None:
    body = sample("commcare", "tb-dot-visit")
    first = (await _post(gw, "commcare", body)).json()
    before = gw.store.last_change_seq()
    for _ in range(3):
        again = (await _post(gw, "commcare", body)).json()
        assert again["unchanged"] == 1 and again["stored"] == 0
        assert {r["change"] for r in _resources(again)} == {"unchanged"}
        assert [(r["type"], r["id"], r["version"]) for r in _resources(again)] == [
            (r["type"], r["id"], r["version"]) for r in _resources(first)
        ]
    assert gw.store.last_change_seq() == before  # nothing written at all
    search = await gw.fhir.get("/fhir/Observation", params={"_summary": "count"})
    assert search.json()["total"] == sum(1 for r in _resources(first) if r["type"] == "Observation")


async def test_an_edited_record_updates_only_what_changed(gw: Harness) -> None:
    record = json.loads(sample("commcare", "tb-dot-visit"))
    await _post(gw, "commcare", json.dumps(record).encode())
    record["form"]["vitals"]["weight_kg"] = "47.9"
    report = (await _post(gw, "commcare", json.dumps(record).encode())).json()
    updated = [r for r in _resources(report) if r["change"] == "updated"]
    assert [r["type"] for r in updated] == ["Observation"]
    assert report["stored"] == 1
    weight = await gw.fhir.get(f"/fhir/Observation/{updated[0]['id']}")
    assert weight.json()["valueQuantity"]["value"] == 47.9
    assert weight.json()["meta"]["versionId"] == "2"


async def test_visit_before_registration_is_stored_and_linked_later(gw: Harness) -> None:
    report = await _post(gw, "cht", sample("cht", "report-data-record-assessment"))
    assert report.status_code == 200 and report.json()["quarantined"] == 0
    encounter_id = next(r["id"] for r in _resources(report.json()) if r["type"] == "Encounter")
    encounter = (await gw.fhir.get(f"/fhir/Encounter/{encounter_id}")).json()
    patient_ref = encounter["subject"]["reference"]
    assert (await gw.fhir.get(f"/fhir/{patient_ref}")).status_code == 404  # not registered yet
    person = await _post(gw, "cht", sample("cht", "person-patient"))
    assert person.status_code == 200
    patient = (await gw.fhir.get(f"/fhir/{patient_ref}")).json()
    assert patient["name"][0]["text"] == "Aisha Nakato"
    found = await gw.fhir.get("/fhir/Encounter", params={"subject": patient_ref})
    assert found.json()["total"] == 1


async def test_array_with_a_bad_record_stores_the_rest_and_quarantines_it(gw: Harness) -> None:
    good = json.loads(sample("cht", "person-chw"))
    bad = json.loads(sample("cht", "person-patient"))
    bad["doc"]["sex"] = "dog"
    response = await _post(gw, "cht", json.dumps([good, bad]).encode())
    assert response.status_code == 202
    report = response.json()
    assert (report["stored"], report["quarantined"]) == (1, 1)
    failed = report["results"][1]
    assert failed["status"] == "quarantined" and failed["record"] == bad["doc"]["_id"]
    assert failed["outcome"]["issue"][0]["code"] == "code-invalid"
    assert failed["outcome"]["issue"][0]["expression"] == ["doc.sex"]
    held = gw.store.quarantine_get(failed["quarantine_id"])
    assert held is not None and json.loads(held.body) == bad


async def test_source_can_answer_422_for_quarantined_records(gw: Harness) -> None:
    response = await _post(gw, "cht-strict", sample("cht", "outbound-patient-no-date"))
    assert response.status_code == 422
    assert response.json()["results"][0]["outcome"]["resourceType"] == "OperationOutcome"


async def test_csv_line_list(gw: Harness) -> None:
    response = await _post(gw, "csv", sample("csv", "malaria-line-list"), {"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 4


@pytest.mark.parametrize("delimiter", [";", "\t"])
async def test_a_semicolon_or_tab_separated_line_list_is_read_as_such(gw: Harness, delimiter: str) -> None:
    # A spreadsheet saved as CSV in a locale whose decimal mark is a comma (French, Portuguese)
    # separates cells with semicolons; a tab-separated export is as common.
    rows = list(csv.reader(io.StringIO(sample("csv", "malaria-line-list").decode())))
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    response = await _post(gw, "csv", buffer.getvalue().encode(), {"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 4
    # the same records as the comma-separated file: sending that now changes nothing
    again = await _post(gw, "csv", sample("csv", "malaria-line-list"), {"Content-Type": "text/csv"})
    assert again.json()["unchanged"] == 4, again.text


@pytest.mark.parametrize("charset", ["windows-1252", "ISO-8859-1", "latin1"])
async def test_a_csv_in_a_spreadsheet_code_page_is_read_in_the_charset_it_names(gw: Harness, charset: str) -> None:
    rows = sample("csv", "malaria-line-list").decode().splitlines()
    rows[1] = rows[1].replace("Okello Brian", "Okéllo Brïan")
    body = "\n".join(rows).encode("cp1252")
    # Unnamed, the same bytes are no UTF-8: refused whole, with the way out named.
    refused = await _post(gw, "csv", body, {"Content-Type": "text/csv"})
    assert refused.status_code == 400 and "charset=windows-1252" in refused.text
    response = await _post(gw, "csv", body, {"Content-Type": f"text/csv; charset={charset}"})
    assert response.status_code == 200, response.text
    patient = next(r for r in response.json()["results"][0]["resources"] if r["type"] == "Patient")
    stored = (await gw.fhir.get(f"/fhir/Patient/{patient['id']}")).json()
    assert stored["name"][0]["text"] == "Okéllo Brïan"
    unknown = await _post(gw, "csv", body, {"Content-Type": "text/csv; charset=klingon"})
    assert unknown.status_code == 415 and "klingon" in unknown.text


async def test_csv_row_that_fails_is_kept_as_csv_and_replayable(gw: Harness) -> None:
    rows = sample("csv", "malaria-line-list").decode().splitlines()
    rows[2] = rows[2].replace(",negative,", ",weird,")
    response = await _post(gw, "csv", "\n".join(rows).encode(), {"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 202
    qid = response.json()["results"][1]["quarantine_id"]
    held = gw.store.quarantine_get(qid)
    assert held is not None and held.content_type == "text/csv"
    assert held.body.decode().splitlines()[1].startswith("LL-2025-05-0002,")


async def test_a_csv_line_of_the_wrong_width_is_quarantined_and_the_others_stored(gw: Harness) -> None:
    rows = sample("csv", "malaria-line-list").decode().splitlines()
    rows.insert(2, "LL-2025-05-0099,2025-05-05,short")  # 3 cells
    rows.append(rows[1] + ",one too many")
    response = await _post(gw, "csv", "\n".join(rows).encode(), {"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["stored", "quarantined", "stored", "stored", "stored", "quarantined"]
    short = gw.store.quarantine_get(results[1]["quarantine_id"])
    assert short is not None and short.content_type == "text/csv"
    assert short.body.decode().splitlines()[1] == "LL-2025-05-0099,2025-05-05,short"  # kept as it came
    # Where each line was is the result's index (the line after the header); the reason holds
    # none, as the same line sent again anywhere is the same held record.
    assert results[1]["outcome"]["issue"][0]["diagnostics"] == "the CSV line has 3 cells, the header 13"
    assert results[5]["outcome"]["issue"][0]["diagnostics"] == (
        "the CSV line has a value in column 14, which the header does not name")
    # Replaying cannot make the line whole: it stays held, with the same reason.
    replay = await gw.admin.post(f"/admin/quarantine/{results[1]['quarantine_id']}/replay")
    assert replay.status_code == 422 and "3 cells" in replay.text


async def test_an_array_item_that_is_no_object_is_quarantined_and_the_others_stored(gw: Harness) -> None:
    record = json.loads(sample("kobo", "hypertension-visit"))
    body = b"[" + orjson.dumps(record) + b', "oops", 42]'
    response = await _post(gw, "kobo", body)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["stored", "quarantined", "quarantined"]
    assert results[1]["outcome"]["issue"][0]["diagnostics"] == "the array item is a text, not a JSON object"
    assert results[2]["outcome"]["issue"][0]["diagnostics"] == "the array item is a number, not a JSON object"
    held = gw.store.quarantine_get(results[2]["quarantine_id"])
    assert held is not None and held.body == b"42"  # kept as it came


@pytest.mark.parametrize(
    ("source", "body", "content_type", "twins"),
    [
        ("kobo", b'[null, null, {"_id": 1}, null]', "application/json", [0, 1, 3]),
        ("csv", b"record_id,visit_date\nx\nLL-1,2025-05-05\nx\n", "text/csv", [0, 2]),
    ],
)
async def test_the_same_bad_item_twice_in_one_body_is_answered_as_its_one_entry_holds_it(
    gw: Harness, source: str, body: bytes, content_type: str, twins: list[int]
) -> None:
    """Identical items are one held record (its bytes): the answer of each said where it was
    ("item 0 of the array"), the entry kept only the last one's words, so the answer for the
    first disagreed with what the quarantine holds (found by test_random_json)."""
    response = await _post(gw, source, body, {"Content-Type": content_type})
    assert response.status_code == 202, response.text
    held = [r for r in response.json()["results"] if r["status"] == "quarantined"]
    assert len({r["quarantine_id"] for r in held if r["index"] in twins}) == 1
    for result in held:
        entry = gw.store.quarantine_get(result["quarantine_id"])
        assert entry is not None and entry.outcome == result["outcome"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"not json", JSON, 400, "structure"),
        (b"", JSON, 400, "required"),
        (b"42", JSON, 400, "structure"),
        (b"[]", JSON, 400, "required"),
        (b"[1, 2]", JSON, 400, "structure"),
        (b'{"a": "\xff\xfe"}', JSON, 400, "structure"),
        (b"[" * 200 + b"]" * 200, JSON, 400, "too-costly"),
        (b'{"a": 1}', {"Content-Type": "application/json; charset=iso-8859-1"}, 415, "not-supported"),
        (b"<form/>", {"Content-Type": "text/xml"}, 415, "not-supported"),
        (b'a,b\n"1,2\n', {"Content-Type": "text/csv"}, 400, "structure"),  # a quote never closed
        (b"a,b\n\xe9,1\n", {"Content-Type": "text/csv"}, 400, "structure"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    gw: Harness, body: bytes, headers: dict[str, str], status: int, code: str
):
    response = await _post(gw, "cht", body, headers)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert gw.store.quarantine_list() == []


async def test_50_mb_body_is_refused(gw: Harness) -> None:
    body = b"[" + b'{"a": "' + b"x" * (50 * 1024 * 1024) + b'"}]'
    response = await _post(gw, "cht", body)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


async def test_too_many_records_in_one_request(gw: Harness) -> None:
    rows = "record_id\n" + "\n".join(f"r{i}" for i in range(1001))
    response = await _post(gw, "csv", rows.encode(), {"Content-Type": "text/csv"})
    assert response.status_code == 413


async def test_auth(gw: Harness) -> None:
    body = sample("cht", "person-chw")
    assert (await gw.client().post("/ingest/cht", content=body, headers=JSON)).status_code == 401
    other = gw.client("ingest:kobo")
    assert (await other.post("/ingest/cht", content=body, headers=JSON)).status_code == 403
    only_cht = gw.client("ingest:cht")
    assert (await only_cht.post("/ingest/cht", content=body, headers=JSON)).status_code == 200
    assert (await gw.sender.post("/ingest/nope", content=body, headers=JSON)).status_code == 404
    assert (await gw.sender.get("/admin/quarantine")).status_code == 403


async def test_a_record_refused_by_validation_does_not_sink_its_batch(gw: Harness) -> None:
    records = [json.loads(sample("cht", "person-chw")), json.loads(sample("cht", "person-patient"))]
    broken = json.loads(sample("cht", "place-household-configurable"))
    broken["doc"]["name"] = "Nakato\u0001Household"  # FHIR strings may not hold control characters
    response = await _post(gw, "cht", json.dumps([records[0], broken, records[1]]).encode())
    assert response.status_code == 202
    report = response.json()
    assert [r["status"] for r in report["results"]] == ["stored", "quarantined", "stored"]
    issue = report["results"][1]["outcome"]["issue"][0]
    assert issue["code"] == "value" and "Location" in issue["expression"][0]


async def test_two_versions_of_a_record_in_one_request_apply_in_order(gw: Harness) -> None:
    first = json.loads(sample("cht", "person-patient"))
    second = json.loads(sample("cht", "person-patient"))
    second["doc"]["phone"] = "+256700000001"
    report = (await _post(gw, "cht", json.dumps([first, second]).encode())).json()
    assert [r["status"] for r in report["results"]] == ["stored", "stored"]
    patient = next(r for r in report["results"][1]["resources"] if r["type"] == "Patient")
    assert (patient["version"], patient["change"]) == ("2", "updated")
    stored = (await gw.fhir.get(f"/fhir/Patient/{patient['id']}")).json()
    assert stored["telecom"][0]["value"] == "+256700000001"


async def test_shared_resources_in_one_request_are_written_once(gw: Harness) -> None:
    visit = json.loads(sample("kobo", "hypertension-visit"))
    other = json.loads(sample("kobo", "hypertension-visit"))
    other["meta/rootUuid"] = "uuid:0e3b1c7a-2f4d-4a6e-8b0c-5d1e7f3a9b2d"
    report = (await _post(gw, "kobo", json.dumps([visit, other]).encode())).json()
    assert report["stored"] == 2
    patients = [next(r for r in res["resources"] if r["type"] == "Patient") for res in report["results"]]
    assert patients[0] == patients[1] and patients[0]["version"] == "1"


async def test_a_gzip_compressed_upload_is_ingested(gw: Harness) -> None:
    # A CHW app on a mobile link may compress what it sends: a CSV line list, here.
    body = gzip.compress(sample("csv", "malaria-line-list"))
    response = await gw.sender.post("/ingest/csv", content=body,
                                    headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["results"] and all(r["status"] == "stored" for r in response.json()["results"])


@pytest.mark.parametrize("count", [1e29, 123456789012345678901234567890, "1234567890123456789012"])
async def test_a_whole_number_too_large_for_json_is_quarantined_naming_the_field(gw: Harness, count: Any) -> None:
    """A JSON number past 64 bits (parsed as a float, or as an int by the backfill's parser) or a
    numeral too long for ``integer`` is refused with the field named, not a 500 at the write."""
    from gateway.errors import MappingError
    from gateway.mapping.values import to_integer

    with pytest.raises(MappingError, match="at most 18 digits"):
        to_integer(count, "meds/pills_remaining")
    record = json.loads(sample("kobo", "hypertension-visit"))
    record["meds/pills_remaining"] = 1.2345678901234568e29
    response = await _post(gw, "kobo", orjson.dumps(record))
    assert response.status_code == 202, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "quarantined"
    issue = result["outcome"]["issue"][0]
    assert issue["expression"] == ["`meds/pills_remaining`"] and "at most 18 digits" in issue["diagnostics"]
