"""Change detection against DHIS2's answers (respx), with the digests in a real SQLite delivery queue.

A digest is recorded only for objects DHIS2 reported accepted: a refused object, a lost
answer or a crash before the answer leave it to be sent again; an object accepted and
unchanged is never sent again, whichever job plans it (a retry, a replay, a redelivery
after a worker crash).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from dhis2_sandbox import SandboxServer
from gateway.clock import ManualClock
from gateway.connectors.base import Permanent, Retry, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle, is_retracted
from gateway.delivery.sqlite_queue import SQLiteQueue
from tests.dhis2.conftest import MAPPINGS, demo_snapshot, make_connector, make_job
from tests.dhis2.records import chw_record, places

BASE = "https://dhis2.test"
SNAPSHOT = demo_snapshot(BASE)
KEYS = {"trackedEntities": ("TRACKED_ENTITY", "trackedEntity"), "enrollments": ("ENROLLMENT", "enrollment"),
        "events": ("EVENT", "event")}


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SQLiteQueue]:
    opened = SQLiteQueue(tmp_path / "queue.db", clock=ManualClock())
    yield opened
    await opened.close()


def connector(source: ResourceBundle, queue: SQLiteQueue) -> Dhis2Connector:
    options = Dhis2Options(mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml", uid_namespace="digests")
    return Dhis2Connector(
        Dhis2Client(BASE), options, source, ManualClock(), mappings_root=MAPPINGS, snapshot=SNAPSHOT,
        digests=queue, destination="dhis2",
    )


def sent(request: httpx.Request) -> list[tuple[str, str]]:
    body = orjson.loads(request.content)
    return [(KEYS[key][0], obj[KEYS[key][1]]) for key in KEYS for obj in body.get(key, [])]


def report(objects: list[tuple[str, str]], refuse: str | None = None) -> httpx.Response:
    """An ImportReport (atomicMode=OBJECT) accepting ``objects`` but the one of type ``refuse``."""
    errors = [
        {"errorCode": "E1302", "message": "DataElement `x` is not valid", "trackerType": kind, "uid": uid}
        for kind, uid in objects
        if kind == refuse
    ]
    accepted = [(kind, uid) for kind, uid in objects if kind != refuse]
    type_map = {
        kind: {
            "trackerType": kind,
            "objectReports": [
                {"trackerType": kind, "uid": uid, "errorReports": []} for k, uid in accepted if k == kind
            ],
        }
        for kind in ("TRACKED_ENTITY", "ENROLLMENT", "EVENT")
    }
    body: dict[str, Any] = {
        "status": "ERROR" if errors else "OK",
        "validationReport": {"errorReports": errors},
        "stats": {"created": len(accepted), "updated": 0, "deleted": 0, "ignored": len(errors), "total": len(objects)},
        "bundleReport": {"typeReportMap": type_map},
    }
    return httpx.Response(409 if errors else 200, json=body)


@respx.mock(base_url=BASE)
async def test_only_accepted_objects_get_a_digest_and_unchanged_ones_are_never_sent_again(
    respx_mock: respx.MockRouter, queue: SQLiteQueue
) -> None:
    resources = places() + chw_record(1)
    source = ResourceBundle(resources)
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    observation = next(r for r in resources if r["resourceType"] == "Observation")
    requests: list[list[tuple[str, str]]] = []
    refuse: list[str | None] = ["EVENT"]

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(sent(request))
        return report(requests[-1], refuse[0])

    respx_mock.post("/api/tracker").mock(side_effect=answer)
    conn = connector(source, queue)
    try:
        # DHIS2 stores the person and the enrollment, refuses the event: one grouped refusal,
        # with the request sent and the whole report; digests for the two accepted objects only.
        (outcome,) = await conn.deliver([make_job(encounter)])
        assert isinstance(outcome, Permanent) and outcome.reason == "dhis2_E1302"
        assert [kind for kind, _ in requests[0]] == ["TRACKED_ENTITY", "ENROLLMENT", "EVENT"]
        event = requests[0][2]
        assert outcome.group == f"EVENT/{event[1]}"
        assert outcome.request is not None and event[1] in outcome.request.body
        assert outcome.response is not None and orjson.loads(outcome.response.body)["stats"]["ignored"] == 1
        names = [f"{kind}/{uid}" for kind, uid in requests[0]]
        assert set(await queue.accepted_digests("dhis2", names)) == set(names[:2])

        # Another job of the visit (an Observation) plans the same objects: only the event is sent.
        (outcome,) = await conn.deliver([make_job(observation)])
        assert isinstance(outcome, Permanent) and outcome.group == f"EVENT/{event[1]}"
        assert requests[1] == [event]

        # DHIS2 fixed: the replayed job sends the event alone, and it is accepted.
        refuse[0] = None
        (outcome,) = await conn.deliver([make_job(encounter)])
        assert isinstance(outcome, Success) and requests[2] == [event]
        assert set(await queue.accepted_digests("dhis2", names)) == set(names)

        # The same jobs again (a redelivery after a worker crash, a replay): no request at all.
        outcomes = await conn.deliver([make_job(observation)])
        outcomes += await conn.deliver([make_job(encounter)])
        assert all(isinstance(o, Success) for o in outcomes) and len(requests) == 3

        # A corrected value: the event alone, once.
        source.add({**observation, "valueQuantity": {**observation["valueQuantity"], "value": 12.9}})
        (outcome,) = await conn.deliver([make_job(observation)])
        assert isinstance(outcome, Success) and requests[3] == [event] and len(requests) == 4
    finally:
        await conn.aclose()


@respx.mock(base_url=BASE)
async def test_a_lost_answer_records_nothing_so_everything_is_sent_again(
    respx_mock: respx.MockRouter, queue: SQLiteQueue
) -> None:
    resources = places() + chw_record(2)
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    requests: list[list[tuple[str, str]]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(sent(request))
        if len(requests) == 1:
            raise httpx.ReadTimeout("no answer", request=request)  # DHIS2 may or may not have it
        return report(requests[-1])

    respx_mock.post("/api/tracker").mock(side_effect=answer)
    conn = connector(ResourceBundle(resources), queue)
    try:
        (outcome,) = await conn.deliver([make_job(encounter)])
        assert isinstance(outcome, Retry)
        names = [f"{kind}/{uid}" for kind, uid in requests[0]]
        assert await queue.accepted_digests("dhis2", names) == {}
        (outcome,) = await conn.deliver([make_job(encounter)])
        assert isinstance(outcome, Success) and requests[1] == requests[0]  # all three again
        assert set(await queue.accepted_digests("dhis2", names)) == set(names)
    finally:
        await conn.aclose()


@pytest.mark.parametrize(
    ("resource", "retracted"),
    [
        ({"resourceType": "Observation", "status": "entered-in-error"}, True),
        ({"resourceType": "Observation", "status": "final"}, False),
        ({"resourceType": "ServiceRequest", "status": "revoked"}, True),
        ({"resourceType": "MedicationDispense", "status": "entered-in-error"}, True),
        ({"resourceType": "Task", "status": "cancelled"}, True),
        (
            {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "entered-in-error",
                        }
                    ]
                },
            },
            True,
        ),
        ({"resourceType": "Condition", "verificationStatus": {"coding": [{"code": "confirmed"}]}}, False),
    ],
)
def test_retracted_resources_are_recognised_by_status_or_verification_status(
    resource: dict[str, Any], retracted: bool
) -> None:
    # What the ingest's retractions produce (a status, or a Condition's verificationStatus):
    # such a resource no longer gives its data value (cleared in DHIS2) nor counts in reports.
    assert is_retracted(resource) is retracted


async def test_a_dhis2_that_lost_its_data_gets_the_parents_again_after_one_refusal(
    sandbox: SandboxServer, queue: SQLiteQueue
) -> None:
    # Digests say what DHIS2 *last accepted*; a DHIS2 restored from an older backup (here: the
    # sandbox reset) no longer has the person. The event sent alone is refused for its missing
    # parent, the left-out parents' digests are forgotten, and the replay sends all three.
    resources = places() + chw_record(3)
    source = ResourceBundle(resources)
    encounter = next(r for r in resources if r["resourceType"] == "Encounter")
    muac = next(r for r in resources if r["id"].endswith("-muac"))
    conn = make_connector(sandbox.base_url, source)
    conn.digests, conn.destination = queue, "dhis2"
    try:
        assert isinstance((await conn.deliver([make_job(encounter)]))[0], Success)
        async with httpx.AsyncClient(base_url=sandbox.base_url) as admin:
            await admin.post("/sandbox/reset")
        source.add({**muac, "valueQuantity": {**muac["valueQuantity"], "value": 13.1}})
        (refused,) = await conn.deliver([make_job(muac)])
        assert isinstance(refused, Permanent) and refused.request is not None
        assert '"trackedEntities":[]' in refused.request.body  # the event alone was sent
        (replayed,) = await conn.deliver([make_job(muac)])
        assert isinstance(replayed, Success)
        async with httpx.AsyncClient(base_url=sandbox.base_url) as admin:
            stored = (await admin.get("/sandbox/stats")).json()["stored"]
        assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)
    finally:
        await conn.aclose()
