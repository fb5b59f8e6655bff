"""The dhis2 connector against the sandbox over real HTTP: outcomes, ordering, idempotency."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from dhis2_sandbox import (
    DEFAULT_TOKEN,
    FaultConfig,
    SandboxServer,
    SandboxSettings,
    create_sandbox_app,
)
from gateway.connectors.base import Permanent, Retry, Success
from gateway.connectors.dhis2 import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import make_connector, make_job
from tests.dhis2.records import chw_record, household, patient, places
from tests.sandbox.conftest import Demo

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


async def stats(server: SandboxServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return dict((await client.get("/sandbox/stats")).json())


async def get(server: SandboxServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        return await client.get(path)


async def test_a_visit_arrives_as_tracked_entity_enrollment_and_event(
    sandbox: SandboxServer, demo: Demo
) -> None:
    resources = places() + chw_record(1)
    connector = make_connector(sandbox.base_url, ResourceBundle(resources))
    try:
        outcomes = await connector.deliver([make_job(r) for r in resources[2:]])
    finally:
        await connector.aclose()
    assert all(isinstance(o, Success) for o in outcomes), outcomes
    stored = (await stats(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)
    events = (await get(sandbox, "/api/tracker/events")).json()["events"]
    values = {v["dataElement"]: v["value"] for v in events[0]["dataValues"]}
    assert values == {
        demo.de("CHW_VISIT_TYPE"): "ROUTINE",
        demo.de("CHW_FEVER"): "true",
        demo.de("CHW_RDT_RESULT"): "POSITIVE",
        demo.de("CHW_MUAC_CM"): "11.2",
        demo.de("CHW_ACT_DOSES"): "6",
        demo.de("CHW_REFERRED"): "true",
    }
    assert events[0]["orgUnit"] == demo.ou("CU_KISIWA") and events[0]["status"] == "COMPLETED"
    assert events[0]["occurredAt"] == "2024-05-02T07:00:00.000"
    person = (await get(sandbox, "/api/tracker/trackedEntities")).json()["trackedEntities"][0]
    assert {a["attribute"]: a["value"] for a in person["attributes"]}[demo.tea("SEX")] == "FEMALE"


async def test_replays_change_nothing(sandbox: SandboxServer) -> None:
    resources = places() + chw_record(1) + chw_record(2, muac=None, referral=False)
    connector = make_connector(sandbox.base_url, ResourceBundle(resources))
    jobs = [make_job(r) for r in resources if r["resourceType"] not in ("Location",)]
    try:
        first = await connector.deliver(jobs)
        before = await stats(sandbox)
        for _ in range(2):
            again = await connector.deliver(jobs)
            assert [type(o) for o in again] == [type(o) for o in first]
    finally:
        await connector.aclose()
    after = await stats(sandbox)
    assert before["stored"] == after["stored"] and before["revisions"] == after["revisions"]
    assert after["stored"]["event"] == 2


async def test_an_edited_observation_updates_and_a_removed_one_clears(
    sandbox: SandboxServer, demo: Demo
) -> None:
    resources = places() + chw_record(1)
    bundle = ResourceBundle(resources)
    connector = make_connector(sandbox.base_url, bundle)
    try:
        await connector.deliver([make_job(resources[3])])
        muac = next(r for r in resources if r["id"] == "enc-1-muac")
        bundle.add({**muac, "valueQuantity": {"value": 105, "code": "mm", "unit": "mm"}})
        assert isinstance((await connector.deliver([make_job(muac)]))[0], Success)
        referral = next(r for r in resources if r["id"] == "enc-1-referral")
        bundle.add({**referral, "status": "revoked"})
        await connector.deliver([make_job(referral)])
    finally:
        await connector.aclose()
    event = (await get(sandbox, "/api/tracker/events")).json()["events"][0]
    values = {v["dataElement"]: v["value"] for v in event["dataValues"]}
    assert values[demo.de("CHW_MUAC_CM")] == "10.5" and values[demo.de("CHW_REFERRED")] == "false"


async def test_one_bad_record_does_not_block_the_batch(sandbox: SandboxServer) -> None:
    good = chw_record(1)
    bad = chw_record(2)
    bad[1] = {**bad[1], "identifier": []}  # no client ID: the mandatory TET attribute is missing (E1090)
    resources = places() + good + bad
    connector = make_connector(sandbox.base_url, ResourceBundle(resources))
    try:
        outcomes = await connector.deliver([make_job(good[2]), make_job(bad[2])])
    finally:
        await connector.aclose()
    assert isinstance(outcomes[0], Success)
    failed = outcomes[1]
    assert isinstance(failed, Permanent) and failed.reason == "dhis2_E1090"
    assert (
        failed.detail is not None
        and "FHIR Patient/pt-2" in failed.detail
        and "job Encounter/enc-2" in failed.detail
    )
    assert (await stats(sandbox))["stored"]["event"] == 1


async def test_dhis2_refusing_an_option_code_names_e1125_and_the_observation(
    sandbox: SandboxServer, demo: Demo
) -> None:
    resources = places() + chw_record(1)
    connector = make_connector(sandbox.base_url, ResourceBundle(resources))
    try:
        await connector._ensure_ready()  # metadata cached while POSITIVE is still an option
        catalog = sandbox.app.state.sandbox.catalog
        option_set = catalog.by_id[catalog.by_id[demo.de("CHW_RDT_RESULT")]["optionSet"]["id"]]
        option_set["options"] = [
            r for r in option_set["options"] if catalog.by_id[r["id"]]["code"] != "POSITIVE"
        ]
        outcome = (await connector.deliver([make_job(resources[3])]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1125"
    assert outcome.detail is not None and "Value `POSITIVE` is not a valid option code" in outcome.detail
    assert "FHIR Observation/enc-1-rdt" in outcome.detail


async def test_values_dhis2_would_refuse_are_caught_before_sending(sandbox: SandboxServer) -> None:
    resources = places() + chw_record(1)
    bundle = ResourceBundle(resources)
    rate = {
        "resourceType": "Observation",
        "id": "enc-1-rate",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1"}]},
        "subject": {"reference": "Patient/pt-1"},
        "encounter": {"reference": "Encounter/enc-1"},
        "valueQuantity": {"value": 44.5},
    }
    bundle.add(rate)
    connector = make_connector(sandbox.base_url, bundle)
    try:
        outcome = (await connector.deliver([make_job(rate)]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1302"
    assert outcome.detail is not None and "checked before sending" in outcome.detail
    assert "value_not_positive_integer" in outcome.detail and "FHIR Observation/enc-1-rate" in outcome.detail
    assert (await stats(sandbox))["faults"]["requests"] < 15  # metadata only: nothing was imported


async def test_a_visit_before_its_patient_waits(sandbox: SandboxServer) -> None:
    resources = places() + chw_record(1)
    without_patient = [r for r in resources if r["resourceType"] != "Patient"]
    connector = make_connector(sandbox.base_url, ResourceBundle(without_patient))
    try:
        outcome = (await connector.deliver([make_job(resources[3])]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Retry) and outcome.reason == "dhis2_waiting_for_patient"


async def test_a_patient_before_its_household_waits_and_an_unmapped_household_is_permanent(
    sandbox: SandboxServer,
) -> None:
    person = patient("pt-1", "hh-1", "C-1")
    bundle = ResourceBundle([person])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        waiting = (await connector.deliver([make_job(person)]))[0]
        bundle.add(household("hh-1", area_id="area-x"))
        bundle.add({"resourceType": "Location", "id": "area-x", "status": "active"})
        unmapped = (await connector.deliver([make_job(person)]))[0]
    finally:
        await connector.aclose()
    assert isinstance(waiting, Retry) and waiting.reason == "dhis2_waiting_for_location"
    assert waiting.delay is None  # the destination's backoff
    assert isinstance(unmapped, Permanent) and unmapped.reason == "dhis2_org-unit"
    assert unmapped.detail is not None
    assert "Location/hh-1 (partOf Location/area-x) maps to no DHIS2 org unit" in unmapped.detail
    assert "FHIR Patient/pt-1" in unmapped.detail
    assert (await stats(sandbox))["stored"]["tracked_entity"] == 0


async def test_large_batches_use_the_async_job_flow(demo: Demo) -> None:
    app = create_sandbox_app(None, FaultConfig(), SandboxSettings(job_delay=0.02))
    with SandboxServer(app) as server:
        resources = places() + [r for n in range(5) for r in chw_record(n)]
        connector = make_connector(
            server.base_url, ResourceBundle(resources), async_threshold=4, job_poll_interval=0.01
        )
        try:
            jobs = [make_job(r) for r in resources if r["resourceType"] == "Encounter"]
            outcomes = await connector.deliver(jobs)
        finally:
            await connector.aclose()
        assert all(isinstance(o, Success) for o in outcomes)
        assert (await stats(server))["stored"]["event"] == 5


async def test_deleting_an_encounter_deletes_its_event(sandbox: SandboxServer) -> None:
    resources = places() + chw_record(1)
    connector = make_connector(sandbox.base_url, ResourceBundle(resources))
    try:
        await connector.deliver([make_job(resources[3])])
        outcome = (await connector.deliver([make_job(resources[3], op="delete")]))[0]
        patient = (await connector.deliver([make_job(resources[2], op="delete")]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Success) and isinstance(patient, Success)
    assert (await stats(sandbox))["stored"]["event"] == 0


async def test_the_monthly_report_becomes_data_values(sandbox: SandboxServer, demo: Demo) -> None:
    from gateway.connectors.dhis2.measure import compute_measure_report, load_measure
    from gateway.connectors.dhis2.orgunits import OrgUnitResolver
    from gateway.connectors.dhis2.periods import parse_period
    from tests.dhis2.conftest import MAPPINGS

    resources = (
        places() + chw_record(1) + chw_record(2, rdt="260385009", muac=12.5) + chw_record(3, referral=False)
    )
    bundle = ResourceBundle(resources)
    connector = make_connector(sandbox.base_url, bundle)
    try:
        await connector._ensure_ready()
        assert connector._aggregate is not None
        report = compute_measure_report(
            load_measure(MAPPINGS / "dhis2" / "chw-monthly-measure.yaml"),
            resources,
            source=bundle,
            resolver=OrgUnitResolver(connector._aggregate.org_units, bundle),
            org_unit=demo.ou("CU_KISIWA"),
            reporter="Location/area-kisiwa",
            period=parse_period("202405"),
        )
        outcome = (await connector.deliver([make_job(report)]))[0]
        again = (await connector.deliver([make_job(report)]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Success) and isinstance(again, Success)
    assert again.detail is not None and "0 imported, 0 updated, 9 ignored" in again.detail
    stored = (
        await get(
            sandbox,
            f"/api/dataValueSets?dataSet={demo.data_set}&period=202405&orgUnit={demo.ou('CU_KISIWA')}",
        )
    ).json()
    by_key = {(v["dataElement"], v["categoryOptionCombo"]): v["value"] for v in stored["dataValues"]}
    assert by_key[(demo.de("CHW_M_HH_VISITED"), demo.coc("default"))] == "3"
    assert by_key[(demo.de("CHW_M_REFERRALS"), demo.coc("AGE_U5"))] == "2"
    assert by_key[(demo.de("CHW_M_RDT_POS"), demo.coc("AGE_U5"))] == "2"
    assert by_key[(demo.de("CHW_M_MUAC_LT115"), demo.coc("AGE_U5"))] == "2"
    assert by_key[(demo.de("CHW_M_RDT_POS"), demo.coc("AGE_5PLUS"))] == "0"
    assert stored["completeDate"] == "2024-06-01"


async def test_stale_metadata_is_refreshed_and_rebinds_the_mapping(
    sandbox: SandboxServer, demo: Demo
) -> None:
    resources = places() + chw_record(1)
    connector = make_connector(sandbox.base_url, ResourceBundle(resources), metadata_max_age=0.001)
    try:
        assert isinstance((await connector.deliver([make_job(resources[3])]))[0], Success)
        # DHIS2's MUAC data element becomes an integer: after the refresh 11.2 is refused
        # before anything is sent.
        sandbox.app.state.sandbox.catalog.by_id[demo.de("CHW_MUAC_CM")]["valueType"] = "INTEGER_POSITIVE"
        outcome = (await connector.deliver([make_job(resources[3])]))[0]
    finally:
        await connector.aclose()
    assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1302"
    assert outcome.detail is not None and "value_not_positive_integer" in outcome.detail


async def test_a_visit_that_creates_its_person_carries_the_program_attributes_on_the_enrollment(
    sandbox: SandboxServer, demo: Demo
) -> None:
    # The Encounter is delivered before its Patient: one payload creates the tracked entity,
    # the enrollment and the event. DHIS2 does not count the tracked entity sent alongside for
    # the program's mandatory attributes (E1018), so the enrollment repeats them.
    first, second = chw_record(1), chw_record(2)
    bundle = ResourceBundle(places() + first + second)
    connector = make_connector(sandbox.base_url, bundle)
    try:
        (outcome,) = await connector.deliver([make_job(first[2])])
        assert isinstance(outcome, Success), outcome
        tracker = connector._tracker
        assert tracker is not None
        plan = tracker.plan(first[2], bundle)
        te, en, _ = (planned.payload for planned in plan.objects)
        program = tracker.mapping.program_attributes
        assert {demo.tea("CHW_CLIENT_ID"), demo.tea("SEX")} <= program
        assert en["attributes"] == [a for a in te["attributes"] if a["attribute"] in program]
        assert {a["attribute"] for a in en["attributes"]} >= {demo.tea("CHW_CLIENT_ID"), demo.tea("SEX")}

        # The shape sent before issue 12 (no enrollment attributes) is refused as DHIS2 refuses it.
        tracker.mapping = dataclasses.replace(tracker.mapping, program_attributes=frozenset())
        (refused,) = await connector.deliver([make_job(second[2])])
    finally:
        await connector.aclose()
    assert isinstance(refused, Permanent) and refused.reason == "dhis2_E1018", refused
    assert refused.detail is not None and "is mandatory in program" in refused.detail
    stored = (await stats(sandbox))["stored"]
    # atomicMode=OBJECT: the second person is stored, their enrollment and visit are not.
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (2, 1, 1)


def _episode(pid: str) -> dict[str, Any]:
    """An EpisodeOfCare of the household program (it becomes the person's enrollment)."""
    return {
        "resourceType": "EpisodeOfCare",
        "id": f"eoc-{pid}",
        "status": "active",
        "type": [{"coding": [{"code": "chw-household-program"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "period": {"start": "2024-05-01"},
    }


async def _enrolled(connector: Dhis2Connector, episode: dict[str, Any]) -> str:
    """Deliver ``episode``; the UID of the enrollment DHIS2 now holds for it."""
    created = await connector.deliver([make_job(episode)])
    assert isinstance(created[0], Success), created
    return created[0].detail.split()[-1] if created[0].detail else ""


async def test_a_deleted_episode_of_care_deletes_its_enrollment_not_resends_it(sandbox: SandboxServer) -> None:
    record = chw_record(1)
    episode = _episode("pt-1")
    bundle = ResourceBundle([*places(), *record[:2], episode])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        uid = await _enrolled(connector, episode)
        assert (await get(sandbox, f"/api/tracker/enrollments/{uid}")).status_code == 200
        bundle.remove("EpisodeOfCare", episode["id"])
        for _ in range(2):  # deleting what DHIS2 no longer has is done too
            deleted = await connector.deliver([make_job(episode, op="delete")])
            assert isinstance(deleted[0], Success), deleted
    finally:
        await connector.aclose()
    assert (await get(sandbox, f"/api/tracker/enrollments/{uid}")).status_code == 404


async def test_a_voided_episode_of_care_deletes_its_enrollment(sandbox: SandboxServer) -> None:
    """A retraction's status version (entered-in-error) of an EpisodeOfCare is not re-sent as an
    ACTIVE enrollment: the enrollment is deleted, as for a voided Encounter's event."""
    record = chw_record(1)
    episode = _episode("pt-1")
    bundle = ResourceBundle([*places(), *record[:2], episode])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        uid = await _enrolled(connector, episode)
        voided = {**episode, "status": "entered-in-error"}
        bundle.add(voided)
        (done,) = await connector.deliver([make_job(voided)])
    finally:
        await connector.aclose()
    assert isinstance(done, Success), done
    assert (await get(sandbox, f"/api/tracker/enrollments/{uid}")).status_code == 404


async def test_a_deleted_episode_of_care_with_visits_left_keeps_its_enrollment(sandbox: SandboxServer) -> None:
    record = chw_record(1)
    episode = _episode("pt-1")
    bundle = ResourceBundle([*places(), *record, episode])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        assert all(isinstance(o, Success) for o in await connector.deliver([make_job(episode), make_job(record[2])]))
        before = await stats(sandbox)
        bundle.remove("EpisodeOfCare", episode["id"])
        (kept,) = await connector.deliver([make_job(episode, op="delete")])
    finally:
        await connector.aclose()
    assert isinstance(kept, Success) and kept.detail is not None and "remain" in kept.detail
    assert (await stats(sandbox))["revisions"] == before["revisions"]


async def test_a_deleted_measure_report_deletes_its_data_values(sandbox: SandboxServer, demo: Demo) -> None:
    from tests.dhis2.test_aggregate_dead_letters import monthly_report

    report = monthly_report()
    bundle = ResourceBundle([report])
    connector = make_connector(sandbox.base_url, bundle)
    query = f"/api/dataValueSets?dataSet={demo.data_set}&period=202405&orgUnit={demo.ou('CU_KISIWA')}"
    try:
        assert isinstance((await connector.deliver([make_job(report)]))[0], Success)
        sent = (await get(sandbox, query)).json()
        assert len(sent["dataValues"]) == 3 and "completeDate" in sent  # the data set registered complete
        bundle.remove("MeasureReport", report["id"])
        deleted = (await connector.deliver([make_job(report, op="delete")]))[0]
        again = (await connector.deliver([make_job(report, op="delete")]))[0]  # nothing left: still done
    finally:
        await connector.aclose()
    assert isinstance(deleted, Success) and isinstance(again, Success), (deleted, again)
    left = (await get(sandbox, query)).json()
    # DHIS2 registers the completeness a value set carries even under importStrategy=DELETE: the
    # values go without it, and the registration is taken back (DELETE completeDataSetRegistrations).
    assert left.get("dataValues", []) == [] and "completeDate" not in left, left


async def test_a_person_deleted_with_their_last_visit_goes_without_cascade_delete_authority() -> None:
    """The visit's event, the person's enrollments and tracked entity go one level a request,
    children first: a DHIS2 user without F_TEI_CASCADE_DELETE / F_ENROLLMENT_CASCADE_DELETE is
    not refused (E1100 / E1103), as it would be for them sent in one request."""
    from pydantic import SecretStr

    from dhis2_sandbox import SandboxUser

    user = SandboxUser(username="integrator", tokens=(SecretStr(DEFAULT_TOKEN),), cascade_delete=False)
    settings = SandboxSettings(users=(user,))
    with SandboxServer(create_sandbox_app(None, FaultConfig(), settings)) as server:
        resources = places() + chw_record(1)
        bundle = ResourceBundle(resources)
        connector = make_connector(server.base_url, bundle)
        try:
            created = await connector.deliver([make_job(resources[3])])
            assert all(isinstance(o, Success) for o in created), created
            assert (await stats(server))["stored"]["event"] == 1
            bundle.remove("Encounter", resources[3]["id"])
            bundle.remove("Patient", resources[2]["id"])
            deleted = await connector.deliver([make_job(resources[3], op="delete")])
        finally:
            await connector.aclose()
        assert all(isinstance(o, Success) for o in deleted), deleted
        stored = (await stats(server))["stored"]
        assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (0, 0, 0)
