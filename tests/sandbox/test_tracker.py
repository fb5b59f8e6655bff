"""The sandbox's /api/tracker against DHIS2's recorded reports and validation rules."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.dhis2.samples import load_sample, shape
from tests.sandbox.conftest import ClientFactory, Demo

SYNC_OBJECT = {"async": "false", "atomicMode": "OBJECT"}
SYNC_ALL = {"async": "false"}


def codes(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["errorCode"], e["trackerType"], e["uid"]) for e in report["validationReport"]["errorReports"]]


async def test_full_success_report_has_the_recorded_shape(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post("/api/tracker", params=SYNC_ALL, json=demo.bundle(1))
    assert response.status_code == 200
    report = response.json()
    sample = load_sample("tracker-import-report-full-success-docs.json")
    del sample["validationReport"]["warningReports"]  # only with reportMode=WARNINGS/FULL
    assert shape(report) == shape(sample)
    assert report["stats"] == {"created": 3, "updated": 0, "deleted": 0, "ignored": 0, "total": 3}


async def test_reports_of_238_carry_index_and_bundle_status(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(version="2.38.1")
    response = await client.post(
        "/api/tracker", params=SYNC_ALL, json={"trackedEntities": [demo.tracked_entity("Ate00000001")]}
    )
    sample = load_sample("tracker-import-200-ok-te-created-2.38shape.json")
    report = response.json()
    assert set(report["bundleReport"]) == set(sample["bundleReport"])
    te_report = report["bundleReport"]["typeReportMap"]["TRACKED_ENTITY"]["objectReports"][0]
    assert shape(te_report) == shape(
        sample["bundleReport"]["typeReportMap"]["TRACKED_ENTITY"]["objectReports"][0]
    )


async def test_warning_reports_only_on_request(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/api/tracker", params={**SYNC_ALL, "reportMode": "WARNINGS"}, json=demo.bundle(1)
    )
    assert response.json()["validationReport"] == {"errorReports": [], "warningReports": []}


async def test_atomic_all_rejects_everything_like_the_recorded_e1041(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    payload = {
        "trackedEntities": [demo.tracked_entity("Ate00000001")],
        # Pwani Health Centre is not assigned to the household-visit program.
        "enrollments": [demo.enrollment("Aen00000001", "Ate00000001", ou="FAC_PWANI")],
    }
    response = await client.post("/api/tracker", params=SYNC_ALL, json=payload)
    assert response.status_code == 409
    sample = load_sample("tracker-import-409-E1041-enrollment-orgunit-program.json")
    body = response.json()
    assert shape(body) == shape(sample)
    assert body["stats"] == sample["stats"]
    error = body["validationReport"]["errorReports"][0]
    assert error["errorCode"] == "E1041"
    assert error["message"] == (
        f"Enrollment OrganisationUnit: `OrganisationUnit ({demo.ou('FAC_PWANI')})`, "
        f"and Program: `Program ({demo.program})`, dont match."
    )
    assert (await client.get("/api/tracker/trackedEntities/Ate00000001")).status_code == 404


def new_person_without_enrollment_attributes(demo: Demo) -> dict[str, Any]:
    """Issue 12's payload: a new tracked entity that has the mandatory program attributes, its
    enrollment without ``attributes`` and a visit, in one import (the connector's old shape)."""
    te = demo.tracked_entity("Ate00000001")
    assert {a["attribute"] for a in demo.program_attributes()} <= {a["attribute"] for a in te["attributes"]}
    return {
        "trackedEntities": [te],
        "enrollments": [demo.enrollment("Aen00000001", "Ate00000001", attributes=[])],
        "events": [demo.event("Aev00000001", "Aen00000001")],
    }


def e1018(demo: Demo, code: str, enrollment: str = "Aen00000001") -> dict[str, Any]:
    attribute = demo.tea(code)
    return {
        "message": f"Attribute: `{attribute}`, is mandatory in program `{demo.program}` "
        f"but not declared in enrollment `{enrollment}`.",
        "errorCode": "E1018",
        "trackerType": "ENROLLMENT",
        "uid": enrollment,
    }


async def test_e1018_counts_the_stored_tracked_entity_not_the_one_sent_alongside(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    # DHIS2 2.41 (EnrollmentAttributeValidator) checks mandatory program attributes against the
    # enrollment's attributes and the tracked entity of its preheat, i.e. as stored before the
    # import: the tracked entity in the same payload does not count.
    payload = new_person_without_enrollment_attributes(demo)
    response = await client.post("/api/tracker", params=SYNC_ALL, json=payload)
    assert response.status_code == 409
    body = response.json()
    sample = load_sample("tracker-import-409-E1041-enrollment-orgunit-program.json")
    assert shape(body) == shape(sample)  # atomicMode=ALL: no bundleReport, everything ignored
    assert body["status"] == "ERROR"
    assert body["validationReport"]["errorReports"] == [e1018(demo, "CHW_CLIENT_ID"), e1018(demo, "SEX")]
    assert body["stats"] == {"created": 0, "updated": 0, "deleted": 0, "ignored": 3, "total": 3}
    assert (await client.get("/api/tracker/trackedEntities/Ate00000001")).status_code == 404


async def test_e1018_under_atomic_object_keeps_the_person_and_drops_the_children(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    payload = new_person_without_enrollment_attributes(demo)
    response = await client.post("/api/tracker", params=SYNC_OBJECT, json=payload)
    assert response.status_code == 409  # status ERROR whatever was committed
    body = response.json()
    assert codes(body) == [
        ("E1018", "ENROLLMENT", "Aen00000001"),
        ("E1018", "ENROLLMENT", "Aen00000001"),
        ("E5000", "EVENT", "Aev00000001"),
    ]
    assert body["stats"] == {"created": 1, "updated": 0, "deleted": 0, "ignored": 2, "total": 3}
    assert (await client.get("/api/tracker/trackedEntities/Ate00000001")).status_code == 200
    assert (await client.get("/api/tracker/enrollments/Aen00000001")).status_code == 404
    # Now the person is stored with the values: the same enrollment without attributes passes.
    payload.pop("trackedEntities")
    response = await client.post("/api/tracker", params=SYNC_ALL, json=payload)
    assert response.status_code == 200, response.json()
    assert response.json()["stats"]["created"] == 2


async def test_an_enrollment_repeating_the_mandatory_attributes_is_accepted_with_its_new_person(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    payload = new_person_without_enrollment_attributes(demo)
    payload["enrollments"][0]["attributes"] = demo.program_attributes()
    response = await client.post("/api/tracker", params=SYNC_ALL, json=payload)
    assert response.status_code == 200, response.json()
    assert response.json()["stats"]["created"] == 3
    # A stored person that lacks a mandatory value still fails, whatever the payload's copy says.
    te = demo.tracked_entity("Bte00000001", client_id="B-1")
    te["attributes"] = [a for a in te["attributes"] if a["attribute"] != demo.tea("SEX")]
    assert (await client.post("/api/tracker", params=SYNC_ALL, json={"trackedEntities": [te]})).status_code == 200
    sent = {**te, "attributes": [*te["attributes"], {"attribute": demo.tea("SEX"), "value": "MALE"}]}
    enrollment = demo.enrollment("Ben00000001", "Bte00000001", attributes=[])
    response = await client.post(
        "/api/tracker", params=SYNC_ALL, json={"trackedEntities": [sent], "enrollments": [enrollment]}
    )
    assert response.json()["validationReport"]["errorReports"] == [e1018(demo, "SEX", "Ben00000001")]


async def test_three_events_in_unassigned_org_unit_like_the_recorded_e1029(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    bundle = demo.bundle(1)
    await client.post("/api/tracker", params=SYNC_ALL, json=bundle)
    events = [demo.event(f"Aev0000001{i}", "Aen00000000", ou="FAC_PWANI") for i in range(3)]
    response = await client.post("/api/tracker", params=SYNC_ALL, json={"events": events})
    assert response.status_code == 409
    sample = load_sample("tracker-import-409-E1029-three-events.json")
    assert shape(response.json()) == shape(sample)
    assert [c[0] for c in codes(response.json())] == ["E1029"] * 3
    assert response.json()["stats"] == sample["stats"]


async def test_event_without_enrollment_is_e1033(client: httpx.AsyncClient, demo: Demo) -> None:
    event = demo.event("Aev00000001", "Aen00000001")
    del event["enrollment"]
    response = await client.post("/api/tracker", params=SYNC_ALL, json={"events": [event]})
    sample = load_sample("tracker-job-report-error-E1033.json")
    assert response.json() == {
        **sample,
        "validationReport": {
            "errorReports": [
                {
                    **sample["validationReport"]["errorReports"][0],
                    "uid": "Aev00000001",
                    "message": "Event: `Aev00000001`, Enrollment value is NULL.",
                }
            ]
        },
    }


async def test_atomic_object_commits_valid_objects_and_orphans_children(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    bundle = demo.bundle(2)
    bundle["trackedEntities"][1]["orgUnit"] = "Xxxxxxxxxx1"  # E1049 on the second person
    bundle["events"][0]["dataValues"][1]["value"] = "eleven"  # E1302 on the first event
    response = await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)
    assert response.status_code == 409
    report = response.json()
    assert codes(report) == [
        ("E1049", "TRACKED_ENTITY", "Ate00000001"),
        ("E1302", "EVENT", "Aev00000000"),
        ("E5000", "ENROLLMENT", "Aen00000001"),
        ("E5000", "EVENT", "Aev00000001"),
    ]
    assert report["validationReport"]["errorReports"][1]["message"] == (
        f"DataElement `{demo.de('CHW_MUAC_CM')}` is not valid: `value_not_numeric`"
    )
    assert report["validationReport"]["errorReports"][2]["message"] == (
        '"enrollment" `Aen00000001` cannot be persisted because "trackedEntity" `Ate00000001` '
        "referenced by it cannot be persisted."
    )
    assert report["stats"] == {"created": 2, "updated": 0, "deleted": 0, "ignored": 4, "total": 6}
    assert (await client.get("/api/tracker/enrollments/Aen00000000")).status_code == 200
    assert (await client.get("/api/tracker/events/Aev00000000")).status_code == 404


async def test_replays_update_and_change_nothing(client: httpx.AsyncClient, demo: Demo) -> None:
    bundle = demo.bundle(3)
    first = (await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)).json()
    before = (await client.get("/sandbox/stats")).json()
    second = (await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)).json()
    after = (await client.get("/sandbox/stats")).json()
    assert first["stats"]["created"] == 9
    assert second["stats"] == {"created": 0, "updated": 9, "deleted": 0, "ignored": 0, "total": 9}
    assert before["stored"] == after["stored"] and before["revisions"] == after["revisions"]


async def test_import_strategies(client: httpx.AsyncClient, demo: Demo) -> None:
    bundle = demo.bundle(1)
    missing = await client.post(
        "/api/tracker", params={**SYNC_OBJECT, "importStrategy": "UPDATE"}, json=bundle
    )
    assert [c[0] for c in codes(missing.json())] == ["E1063", "E1081", "E1032"]
    await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)
    again = await client.post("/api/tracker", params={**SYNC_OBJECT, "importStrategy": "CREATE"}, json=bundle)
    assert [c[0] for c in codes(again.json())] == ["E1002", "E1080", "E1030"]
    gone = await client.post(
        "/api/tracker",
        params={**SYNC_OBJECT, "importStrategy": "DELETE"},
        json={"trackedEntities": [{"trackedEntity": "Ate00000000"}]},
    )
    assert gone.json()["stats"]["deleted"] == 1
    assert (await client.get("/api/tracker/events/Aev00000000")).status_code == 404  # cascaded
    reuse = await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)
    assert [c[0] for c in codes(reuse.json())] == ["E1114", "E1113", "E1082"]


async def test_a_null_value_clears_one_data_value_and_keeps_the_others(client: httpx.AsyncClient, demo: Demo) -> None:
    # DHIS2 docs ("Update data values"): collections merge on update, ``value: null`` deletes one.
    bundle = demo.bundle(1)
    await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)
    event = dict(bundle["events"][0])
    event["dataValues"] = [{"dataElement": demo.de("CHW_MUAC_CM"), "value": None}]
    response = await client.post("/api/tracker", params=SYNC_OBJECT, json={"events": [event]})
    assert response.status_code == 200 and response.json()["stats"]["updated"] == 1
    stored = (await client.get("/api/tracker/events/Aev00000000")).json()
    values = {v["dataElement"]: v["value"] for v in stored["dataValues"]}
    assert demo.de("CHW_MUAC_CM") not in values
    assert values == {demo.de("CHW_VISIT_TYPE"): "ROUTINE", demo.de("CHW_RDT_RESULT"): "POSITIVE"}


async def test_delete_strategy_takes_uids_only_like_the_documented_payload(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    await client.post("/api/tracker", params=SYNC_OBJECT, json=demo.bundle(2))
    sample = load_sample("tracker-delete-events-request.json")
    assert all(set(item) == {"event"} for item in sample["events"])  # only UIDs, as documented
    payload = {"events": [{"event": "Aev00000000"}, {"event": "Aev00000001"}]}
    response = await client.post("/api/tracker", params={**SYNC_OBJECT, "importStrategy": "DELETE"}, json=payload)
    assert response.status_code == 200
    assert response.json()["stats"] == {"created": 0, "updated": 0, "deleted": 2, "ignored": 0, "total": 2}
    assert (await client.get("/api/tracker/events/Aev00000000")).status_code == 404
    assert (await client.get("/api/tracker/enrollments/Aen00000000")).status_code == 200  # the parent stays
    again = await client.post("/api/tracker", params={**SYNC_OBJECT, "importStrategy": "DELETE"}, json=payload)
    assert [c[0] for c in codes(again.json())] == ["E1082", "E1082"]  # deleted: cannot be touched again


async def test_validation_mode_validate_writes_nothing(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post(
        "/api/tracker", params={**SYNC_ALL, "importMode": "VALIDATE"}, json=demo.bundle(1)
    )
    assert response.status_code == 200
    assert "bundleReport" not in response.json()
    assert (await client.get("/sandbox/stats")).json()["stored"]["tracked_entity"] == 0


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d, b: b["trackedEntities"][0].update(trackedEntity="1bad"), ("E1048", "TRACKED_ENTITY")),
        (lambda d, b: b["trackedEntities"][0].pop("orgUnit"), ("E1121", "TRACKED_ENTITY")),
        (lambda d, b: b["trackedEntities"][0].update(orgUnit="Xxxxxxxxxx1"), ("E1049", "TRACKED_ENTITY")),
        (lambda d, b: b["trackedEntities"][0]["attributes"].pop(0), ("E1090", "TRACKED_ENTITY")),
        (
            lambda d, b: b["trackedEntities"][0]["attributes"].append(
                {"attribute": "Xxxxxxxxxx1", "value": "x"}
            ),
            ("E1006", "TRACKED_ENTITY"),
        ),
        (
            lambda d, b: b["trackedEntities"][0]["attributes"][1].update(value="F"),
            ("E1125", "TRACKED_ENTITY"),
        ),
        (
            lambda d, b: b["trackedEntities"][0]["attributes"].append(
                {"attribute": d.tea("DOB"), "value": "2024-13-01"}
            ),
            ("E1007", "TRACKED_ENTITY"),
        ),
        (lambda d, b: b["enrollments"][0].update(program="Xxxxxxxxxx1"), ("E1069", "ENROLLMENT")),
        (
            lambda d, b: b["enrollments"][0].update(program=d.uid("programs", "CHW_MEETING")),
            ("E1014", "ENROLLMENT"),
        ),
        (lambda d, b: b["enrollments"][0].update(enrolledAt="2999-01-01"), ("E1020", "ENROLLMENT")),
        (lambda d, b: b["enrollments"][0].update(enrolledAt=None), ("E1025", "ENROLLMENT")),
        (
            lambda d, b: b["enrollments"][0].update(trackedEntity="Xxxxxxxxxx1", attributes=[]),
            ("E1068", "ENROLLMENT"),
        ),
        (
            lambda d, b: (
                b["enrollments"][0].update(
                    attributes=[{"attribute": d.tea("FIRST_NAME"), "value": "x"}], status="ACTIVE"
                )
                or b["trackedEntities"][0].update(
                    attributes=[
                        a for a in b["trackedEntities"][0]["attributes"] if a["attribute"] != d.tea("SEX")
                    ]
                )
            ),
            ("E1018", "ENROLLMENT"),
        ),
        (lambda d, b: b["events"][0].update(programStage="Xxxxxxxxxx1"), ("E1013", "EVENT")),
        (lambda d, b: b["events"][0].pop("programStage"), ("E1123", "EVENT")),
        (lambda d, b: b["events"][0].update(occurredAt=None), ("E1031", "EVENT")),
        (lambda d, b: b["events"][0]["dataValues"].pop(0), ("E1303", "EVENT")),
        (
            lambda d, b: b["events"][0]["dataValues"].append(
                {"dataElement": d.de("CHW_HH_SIZE"), "value": "4"}
            ),
            ("E1305", "EVENT"),
        ),
        (
            lambda d, b: b["events"][0]["dataValues"].append({"dataElement": "Xxxxxxxxxx1", "value": "4"}),
            ("E1304", "EVENT"),
        ),
        (
            lambda d, b: b["events"][0]["dataValues"].append(
                {"dataElement": d.de("CHW_ORS_ZINC"), "value": "false"}
            ),
            ("E1302", "EVENT"),
        ),
        (
            lambda d, b: b["events"][0].update(programStage=d.uid("programStages", "CHW_MEETING_STAGE")),
            ("E1089", "EVENT"),
        ),
    ],
)
async def test_validation_rules(
    client: httpx.AsyncClient, demo: Demo, mutate: Any, expected: tuple[str, str]
) -> None:
    bundle = demo.bundle(1)
    mutate(demo, bundle)
    response = await client.post("/api/tracker", params=SYNC_OBJECT, json=bundle)
    assert response.status_code == 409
    found = [(c[0], c[1]) for c in codes(response.json())]
    assert found[0] == expected, found


async def test_uniqueness_enrollment_and_stage_rules(client: httpx.AsyncClient, demo: Demo) -> None:
    await client.post("/api/tracker", params=SYNC_OBJECT, json=demo.bundle(1))
    twin = {"trackedEntities": [demo.tracked_entity("Bte00000000", client_id="A-0")]}
    assert codes((await client.post("/api/tracker", params=SYNC_OBJECT, json=twin)).json())[0][0] == "E1064"
    second_active = {"enrollments": [demo.enrollment("Ben00000000", "Ate00000000")]}
    assert (
        codes((await client.post("/api/tracker", params=SYNC_OBJECT, json=second_active)).json())[0][0]
        == "E1015"
    )
    registration: dict[str, Any] = {
        "programStage": demo.registration_stage,
        "status": "ACTIVE",
        "dataValues": [{"dataElement": demo.de("CHW_HH_SIZE"), "value": "5"}],
    }
    first = demo.event("Bev00000001", "Aen00000000", **registration)
    assert (
        await client.post("/api/tracker", params=SYNC_OBJECT, json={"events": [first]})
    ).status_code == 200
    second = demo.event("Bev00000002", "Aen00000000", **registration)
    assert (
        codes((await client.post("/api/tracker", params=SYNC_OBJECT, json={"events": [second]})).json())[0][0]
        == "E1039"
    )


async def test_nested_payload_is_flattened(client: httpx.AsyncClient, demo: Demo) -> None:
    nested = load_sample("tracker-import-nested-request.json")
    te = nested["trackedEntities"][0]
    te.update(
        trackedEntityType=demo.person,
        orgUnit=demo.ou("CU_MLIMA"),
        attributes=[{"attribute": demo.tea("CHW_CLIENT_ID"), "value": "N-1"}],
    )
    enrollment = te["enrollments"][0]
    enrollment.update(
        program=demo.program,
        orgUnit=demo.ou("CU_MLIMA"),
        trackedEntityType=demo.person,
        # A new person: the mandatory program attributes go on the enrollment (E1018).
        attributes=[
            {"attribute": demo.tea("CHW_CLIENT_ID"), "value": "N-1"},
            {"attribute": demo.tea("SEX"), "value": "MALE"},
        ],
    )
    event = enrollment["events"][0]
    event.update(
        program=demo.program,
        programStage=demo.visit_stage,
        orgUnit=demo.ou("CU_MLIMA"),
        attributeOptionCombo=None,
        attributeCategoryOptions=None,
        dataValues=[{"dataElement": demo.de("CHW_FEVER"), "value": True}],
    )
    response = await client.post("/api/tracker", params=SYNC_ALL, json=nested)
    assert response.status_code == 200, response.json()
    assert response.json()["stats"]["created"] == 3
    events = (await client.get("/api/tracker/events")).json()["events"]
    assert events[0]["dataValues"] == [{"dataElement": demo.de("CHW_FEVER"), "value": "true"}]
    person = (await client.get("/api/tracker/trackedEntities", params={"program": demo.program})).json()
    assert {a["value"] for a in person["trackedEntities"][0]["attributes"]} == {"N-1", "MALE"}


async def test_async_flow_matches_the_recorded_job_responses(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(job_delay=0.05)
    added = await client.post("/api/tracker", params={"atomicMode": "OBJECT"}, json=demo.bundle(2))
    assert added.status_code == 200
    assert shape(added.json()) == shape(load_sample("tracker-import-async-job-added-docs.json"))
    job = added.json()["response"]["id"]
    pending = await client.get(f"/api/tracker/jobs/{job}/report")
    assert pending.status_code == 404
    for _ in range(200):
        notes = (await client.get(f"/api/tracker/jobs/{job}")).json()
        if notes[0]["completed"]:
            break
        await asyncio.sleep(0.01)
    recorded = load_sample("tracker-job-notifications-completed.json")
    assert shape(notes[0]) == shape(recorded[0])
    assert notes[0]["message"] == "Import complete with status OK, 6 created, 0 updated, 0 deleted, 0 ignored"
    assert [n["message"] for n in notes[1:]] == [n["message"] for n in recorded[1:]]
    assert notes[-1]["data"].keys() - {"userId"} == recorded[-1]["data"].keys() - {"userId"}
    assert notes[-1]["data"]["atomicMode"] == "OBJECT"
    report = await client.get(f"/api/tracker/jobs/{job}/report")
    assert report.status_code == 200 and report.json()["stats"]["created"] == 6
    await client.post("/sandbox/restart")
    gone = await client.get(f"/api/tracker/jobs/{job}/report")
    sample = load_sample("DERIVED-tracker-job-report-404.json")
    assert gone.status_code == 404
    assert gone.json() == {**sample, "message": f"Summary for job {job} does not exist"}


async def test_async_job_added_in_238_names_its_response_type(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(version="2.38.0")
    added = await client.post("/api/tracker", json=demo.bundle(1))
    assert shape(added.json()) == shape(load_sample("tracker-import-async-job-added-2.38.json"))


async def test_async_report_of_failed_import_is_200(client: httpx.AsyncClient, demo: Demo) -> None:
    event = demo.event("Aev00000001", "Aen00000001")
    del event["enrollment"]
    job = (await client.post("/api/tracker", json={"events": [event]})).json()["response"]["id"]
    for _ in range(200):
        report = await client.get(f"/api/tracker/jobs/{job}/report")
        if report.status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert report.status_code == 200 and report.json()["status"] == "ERROR"


@pytest.mark.parametrize(("version", "status"), [("2.39.1", 409), ("2.40.0", 400), ("2.42.0", 400)])
async def test_bad_parameters_are_refused(
    make_client: ClientFactory, demo: Demo, version: str, status: int
) -> None:
    client = make_client(version=version)
    response = await client.post("/api/tracker", params={"atomicMode": "SOME"}, json=demo.bundle(1))
    assert response.status_code == status
    assert response.json()["status"] == "ERROR"


async def test_unparseable_bodies_are_400(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/tracker", content=b"{nope")).status_code == 400
    bad_date = {"events": [{"event": "Aev00000001", "occurredAt": "yesterday"}]}
    assert (await client.post("/api/tracker", params=SYNC_ALL, json=bad_date)).status_code == 400


async def test_exports_page_and_filter(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(version="2.42.0")
    await client.post("/api/tracker", params=SYNC_ALL, json=demo.bundle(3))
    page = (await client.get("/api/tracker/trackedEntities", params={"pageSize": 2, "page": 2})).json()
    assert page["pager"] == {"page": 2, "pageSize": 2} and len(page["trackedEntities"]) == 1
    assert "page" not in page  # the flat fields were removed in 2.42
    found = await client.get(
        "/api/tracker/trackedEntities", params={"filter": f"{demo.tea('CHW_CLIENT_ID')}:eq:A-1"}
    )
    assert [te["trackedEntity"] for te in found.json()["trackedEntities"]] == ["Ate00000001"]
    missing = await client.get("/api/tracker/trackedEntities/Xxxxxxxxxx1")
    assert missing.status_code == 404
    assert shape(missing.json()) == shape(load_sample("webmessage-404-trackedentity-not-found.json"))
    old = make_client(version="2.40.0")
    assert set((await old.get("/api/tracker/events")).json()) == {"page", "pageSize", "instances"}


async def test_persistence_survives_a_restart(tmp_path: Any, make_client: ClientFactory, demo: Demo) -> None:
    first = make_client(state=tmp_path)
    await first.post("/api/tracker", params=SYNC_ALL, json=demo.bundle(1))
    first_app: Any = getattr(first, "app")  # noqa: B009 - set by the fixture
    first_app.state.sandbox.store.close()
    second = make_client(state=tmp_path)
    event = (await second.get("/api/tracker/events/Aev00000000")).json()
    assert event["status"] == "COMPLETED" and len(event["dataValues"]) == 3
    assert (tmp_path / "dhis2-sandbox.sqlite3").exists()


async def test_deletes_with_children_need_the_cascade_authorities(make_client: ClientFactory, demo: Demo) -> None:
    """E1100 / E1103 for a user without F_TEI_CASCADE_DELETE / F_ENROLLMENT_CASCADE_DELETE, judged
    against what is stored: children deleted in the same request still count."""
    from pydantic import SecretStr

    from dhis2_sandbox import DEFAULT_TOKEN, SandboxUser

    user = SandboxUser(username="integrator", tokens=(SecretStr(DEFAULT_TOKEN),), cascade_delete=False)
    client = make_client(users=(user,))
    assert (await client.post("/api/tracker", params=SYNC_OBJECT, json=demo.bundle(1))).status_code == 200
    delete = {**SYNC_OBJECT, "importStrategy": "DELETE"}
    te, en, ev = "Ate00000000", "Aen00000000", "Aev00000000"
    at_once = {
        "trackedEntities": [{"trackedEntity": te}],
        "enrollments": [{"enrollment": en}],
        "events": [{"event": ev}],
    }
    refused = (await client.post("/api/tracker", params=delete, json=at_once)).json()
    assert sorted(codes(refused)) == [("E1100", "TRACKED_ENTITY", te), ("E1103", "ENROLLMENT", en)]
    message = refused["validationReport"]["errorReports"][0]["message"]
    assert "integrator" in message and "CASCADE_DELETE" in message
    assert (await client.get(f"/api/tracker/events/{ev}")).status_code == 404  # the event went
    for level in ({"enrollments": [{"enrollment": en}]}, {"trackedEntities": [{"trackedEntity": te}]}):
        answer = await client.post("/api/tracker", params=delete, json=level)
        assert answer.status_code == 200 and answer.json()["stats"]["deleted"] == 1, answer.text
    assert (await client.get(f"/api/tracker/trackedEntities/{te}")).status_code == 404


async def test_the_default_user_deletes_children_with_their_parent(client: httpx.AsyncClient, demo: Demo) -> None:
    assert (await client.post("/api/tracker", params=SYNC_OBJECT, json=demo.bundle(1))).status_code == 200
    delete = {**SYNC_OBJECT, "importStrategy": "DELETE"}
    payload = {"trackedEntities": [{"trackedEntity": "Ate00000000"}]}
    answer = await client.post("/api/tracker", params=delete, json=payload)
    assert answer.status_code == 200 and answer.json()["stats"]["deleted"] == 1, answer.text
    assert (await client.get("/api/tracker/events/Aev00000000")).status_code == 404


async def test_an_update_moves_the_tracked_entitys_org_unit(client: httpx.AsyncClient, demo: Demo) -> None:
    """As dhis2-core's importer does: the registration org unit follows the update (ownership is
    the transfer API's)."""
    te = demo.tracked_entity("Ate00000009")
    assert (await client.post("/api/tracker", params=SYNC_OBJECT, json={"trackedEntities": [te]})).status_code == 200
    moved = {**te, "orgUnit": demo.ou("CU_MLIMA")}
    assert te["orgUnit"] != moved["orgUnit"]
    answer = await client.post("/api/tracker", params=SYNC_OBJECT, json={"trackedEntities": [moved]})
    assert answer.status_code == 200, answer.text
    stored = (await client.get("/api/tracker/trackedEntities/Ate00000009")).json()
    assert stored["orgUnit"] == demo.ou("CU_MLIMA")
