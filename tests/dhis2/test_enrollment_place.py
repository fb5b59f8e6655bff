"""Without an EpisodeOfCare the enrollment is the first visit's: its date and its org unit. A
later visit somewhere else (the person moved household, or was seen in another CHW area) must
plan the same enrollment, not move it to where that visit took place (each job would re-send it
with another org unit and DHIS2 would move it back and forth)."""

from __future__ import annotations

import httpx

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.base import Success
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import make_connector, make_job
from tests.dhis2.records import household, patient, places, visit

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


async def test_a_later_visit_elsewhere_keeps_the_enrollment_where_the_first_visit_was(
    sandbox: SandboxServer,
) -> None:
    resources = [
        *places(),
        *places("CHW-AREA-MLIMA", "area-mlima"),
        household("hh-1"),
        household("hh-2", "area-mlima"),
        patient("pt-1", "hh-1", "CL-00001"),
    ]
    first = visit("enc-1", "pt-1", "hh-1", "2024-05-02T10:00:00+03:00")
    later = visit("enc-2", "pt-1", "hh-2", "2024-05-09T10:00:00+03:00")
    bundle = ResourceBundle(resources + first + later)
    conn = make_connector(sandbox.base_url, bundle)
    try:
        for encounter in (first[0], later[0]):
            (outcome,) = await conn.deliver([make_job(encounter)])
            assert isinstance(outcome, Success), outcome
        assert conn._tracker is not None
        plans = [conn._tracker.plan(encounter, bundle) for encounter in (first[0], later[0])]
        first_en, later_en = (next(o for o in p.objects if o.tracker_type == "ENROLLMENT") for p in plans)
        first_ev, later_ev = (next(o for o in p.objects if o.tracker_type == "EVENT") for p in plans)
        assert first_ev.payload["orgUnit"] != later_ev.payload["orgUnit"]  # the visits' own places
        assert later_en.payload == first_en.payload
        async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
            (stored,) = (await client.get("/api/tracker/enrollments")).json()["enrollments"]
        assert stored["orgUnit"] == first_ev.payload["orgUnit"]
    finally:
        await conn.aclose()
