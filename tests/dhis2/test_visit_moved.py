"""A visit whose source record is edited to belong to another person (a CHT report re-sent with
another ``patient_uuid``, a CommCare form moved to another case): DHIS2 never lets an event
change enrollment (E1128 "Not allowed to update Event property: enrollment"), so the event under
the old person's enrollment is deleted and the visit is sent again under the next generation of
its UID, in the new person's enrollment. Nothing stays with the wrong person, and no dead letter
is left. Against the sandbox over HTTP."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import SandboxServer
from gateway.clock import ManualClock
from gateway.connectors.dhis2.sources import ResourceBundle
from gateway.delivery.sqlite_queue import SQLiteQueue
from tests.dhis2.records import chw_record, places
from tests.dhis2.test_restored_records import AUTH, connector, deliver_until_done


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SQLiteQueue]:
    opened = SQLiteQueue(tmp_path / "queue.db", clock=ManualClock())
    yield opened
    await opened.close()


async def tracker(server: SandboxServer) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Live enrollments (UID → tracked entity) and live events."""
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        enrollments = (await client.get("/api/tracker/enrollments")).json()["enrollments"]
        events = (await client.get("/api/tracker/events")).json()["events"]
    return {e["enrollment"]: e["trackedEntity"] for e in enrollments}, events


def moved_to(resources: list[dict[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """The visit resources of a record, edited to be about ``patient_id``."""
    out = []
    for resource in resources:
        if resource["resourceType"] in ("Encounter", "Observation", "MedicationDispense", "ServiceRequest"):
            resource = copy.deepcopy(resource)
            for field in ("subject", "for"):
                if field in resource:
                    resource[field] = {"reference": f"Patient/{patient_id}"}
        out.append(resource)
    return out


async def test_a_visit_moved_to_another_person_leaves_the_old_enrollment(
    sandbox: SandboxServer, queue: SQLiteQueue
) -> None:
    first, second = chw_record(1), chw_record(2)
    bundle = ResourceBundle(places() + first + second)
    conn = connector(sandbox.base_url, bundle, queue)
    try:
        assert await deliver_until_done(conn, first[2]) == []
        assert await deliver_until_done(conn, second[2]) == []
        enrollments, events = await tracker(sandbox)
        assert len(enrollments) == 2 and len(events) == 2
        assert len({e["trackedEntity"] for e in events}) == 2

        # Record 2's visit is edited at its source: it was person 1's.
        edited = moved_to(second[1:], "pt-1")
        for resource in edited:
            bundle.add(resource)
        encounter = edited[1]
        assert encounter["resourceType"] == "Encounter"
        reasons = await deliver_until_done(conn, encounter)
        assert set(reasons) <= {"dhis2_uid_reborn"}

        enrollments, events = await tracker(sandbox)
        assert len(events) == 2, events  # the old event is gone, not left beside the new one
        people = {e["trackedEntity"] for e in events}
        assert len(people) == 1  # both visits are now person 1's
        assert all(enrollments[e["enrollment"]] in people for e in events)
        assert await deliver_until_done(conn, encounter) == []  # delivered again: nothing changes
    finally:
        await conn.aclose()
