"""An EpisodeOfCare that reaches DHIS2 after its person's first visit (records arrive out of order:
the visit's form is synced before the program registration) must become the enrollment DHIS2
already holds for that person, not a second one.

Without an EpisodeOfCare the visit enrolled the person under the (Patient, program) enrollment.
DHIS2 refuses a second ACTIVE enrollment in the same program (E1015, "TrackedEntity already has an
active Enrollment in Program"), and never moves an event to another enrollment (E1128). Planned
with a UID of its own, the EpisodeOfCare was refused for good, and the visit, re-planned under the
refused enrollment, had its event deleted from DHIS2 and never sent again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.base import DeliveryOutcome, Job, Retry, Success
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import make_connector, make_job
from tests.dhis2.records import chw_record, places

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


def _episode(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "EpisodeOfCare",
        "id": f"eoc-{pid}",
        "status": "active",
        "type": [{"coding": [{"code": "chw-household-program"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "period": {"start": "2024-05-01"},
    }


async def _deliver(connector: Dhis2Connector, job: Job) -> DeliveryOutcome:
    """Deliver ``job`` as the queue would: again after a short retry, at most three times."""
    for _ in range(3):
        (outcome,) = await connector.deliver([job])
        if not (isinstance(outcome, Retry) and outcome.link_ok):
            return outcome
    return outcome


async def _stored(sandbox: SandboxServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
        enrollments = (await client.get("/api/tracker/enrollments")).json()["enrollments"]
        events = (await client.get("/api/tracker/events")).json()["events"]
    return enrollments, events


async def test_an_episode_of_care_after_the_first_visit_takes_over_the_visits_enrollment(
    sandbox: SandboxServer,
) -> None:
    record = chw_record(1)
    encounter = next(r for r in record if r["resourceType"] == "Encounter")
    bundle = ResourceBundle([*places(), *record])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        assert isinstance(await _deliver(connector, make_job(encounter)), Success)
        (before,), (event,) = await _stored(sandbox)

        episode = _episode("pt-1")
        bundle.add(episode)
        outcome = await _deliver(connector, make_job(episode))
        assert isinstance(outcome, Success), outcome
        again = await _deliver(connector, make_job(encounter))
        assert isinstance(again, Success), again
    finally:
        await connector.aclose()

    enrollments, events = await _stored(sandbox)
    assert [e["enrollment"] for e in enrollments] == [before["enrollment"]]
    assert enrollments[0]["enrolledAt"].startswith("2024-05-01")  # the EpisodeOfCare's date now
    assert [(e["event"], e["enrollment"]) for e in events] == [(event["event"], before["enrollment"])]


async def test_a_new_process_meeting_the_same_refusal_keeps_the_visits_event(sandbox: SandboxServer) -> None:
    record = chw_record(1)
    encounter = next(r for r in record if r["resourceType"] == "Encounter")
    bundle = ResourceBundle([*places(), *record])
    first = make_connector(sandbox.base_url, bundle)
    try:
        assert isinstance(await _deliver(first, make_job(encounter)), Success)
    finally:
        await first.aclose()
    (before,), (event,) = await _stored(sandbox)

    # The EpisodeOfCare is stored; a worker that never delivered it re-sends the visit first.
    bundle.add(_episode("pt-1"))
    second = make_connector(sandbox.base_url, bundle)
    try:
        outcome = await _deliver(second, make_job(encounter))
        assert isinstance(outcome, Success), outcome
    finally:
        await second.aclose()
    enrollments, events = await _stored(sandbox)
    assert [e["enrollment"] for e in enrollments] == [before["enrollment"]]
    assert [(e["event"], e["enrollment"]) for e in events] == [(event["event"], before["enrollment"])]


async def test_a_planned_episode_of_care_is_enrolled_no_later_than_today(sandbox: SandboxServer) -> None:
    """An EpisodeOfCare starting in the future (planned) would be refused by DHIS2 (E1020, E1021:
    enrollment and incident dates cannot be in the future unless the program allows it), as a
    first visit still to come is: it is enrolled today."""
    record = chw_record(1)
    episode = {**_episode("pt-1"), "status": "planned", "period": {"start": "2099-03-01"}}
    bundle = ResourceBundle([*places(), *record, episode])
    connector = make_connector(sandbox.base_url, bundle)
    try:
        outcome = await _deliver(connector, make_job(episode))
    finally:
        await connector.aclose()
    assert isinstance(outcome, Success), outcome
    (enrollment,), _ = await _stored(sandbox)
    today = datetime.now(UTC).date().isoformat()
    assert enrollment["enrolledAt"][:10] <= today and enrollment["occurredAt"][:10] <= today
