"""An attribute value the record no longer has (a phone number removed at the source) is cleared
in DHIS2 with a null value, as data values are: DHIS2 merges attributes on update, so leaving it
out would keep the old value for ever. Mandatory attributes are never cleared (DHIS2: E1076)."""

from __future__ import annotations

import httpx

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.base import Success
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import make_connector, make_job
from tests.dhis2.records import chw_record, places
from tests.sandbox.conftest import Demo

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


async def stored_attributes(server: SandboxServer) -> set[str]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        (te,) = (await client.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
    return {a["attribute"] for a in te["attributes"]}


async def test_a_removed_phone_number_is_cleared_in_dhis2(sandbox: SandboxServer, demo: Demo) -> None:
    resources = places() + chw_record(1)
    patient = resources[2]
    bundle = ResourceBundle(resources)
    conn = make_connector(sandbox.base_url, bundle)
    try:
        (outcome,) = await conn.deliver([make_job(patient)])
        assert isinstance(outcome, Success), outcome
        before = await stored_attributes(sandbox)
        edited = {k: v for k, v in patient.items() if k != "telecom"}
        bundle.add(edited)
        (outcome,) = await conn.deliver([make_job(edited)])
        assert isinstance(outcome, Success), outcome
        after = await stored_attributes(sandbox)
    finally:
        await conn.aclose()
    assert before - after == {demo.tea("PHONE")}  # the phone number, and nothing else
