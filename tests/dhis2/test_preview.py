"""The playground's DHIS2 preview: what delivery would send, planned against the sandbox's metadata, sent nowhere."""

from __future__ import annotations

import httpx

from dhis2_sandbox import SandboxServer
from gateway.connectors.dhis2 import preview_payload
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import make_connector
from tests.dhis2.records import chw_record, places
from tests.sandbox.conftest import Demo


async def _stored(server: SandboxServer) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return dict((await client.get("/sandbox/stats")).json()["stored"])


async def test_a_record_becomes_one_tracker_payload_and_nothing_is_sent(sandbox: SandboxServer, demo: Demo) -> None:
    before = await _stored(sandbox)
    connector = make_connector(sandbox.base_url, ResourceBundle(places()))  # the store holds the CHW area
    try:
        preview = await preview_payload(connector, chw_record(1))
    finally:
        await connector.aclose()
    assert preview.unavailable is None
    assert [len(preview.tracker[key]) for key in ("trackedEntities", "enrollments", "events")] == [1, 1, 1]
    event = preview.tracker["events"][0]
    assert event["orgUnit"] == demo.ou("CU_KISIWA")
    assert {v["dataElement"] for v in event["dataValues"]} >= {demo.de("CHW_FEVER"), demo.de("CHW_RDT_RESULT")}
    notes = dict(preview.notes)
    assert notes["Patient/pt-1"].startswith("sent as tracked entity ")
    assert notes["Encounter/enc-1"].startswith("sent as event ")
    assert await _stored(sandbox) == before


async def test_what_would_wait_or_be_refused_is_named(sandbox: SandboxServer) -> None:
    connector = make_connector(sandbox.base_url, ResourceBundle())  # no CHW area anywhere
    try:
        preview = await preview_payload(connector, chw_record(2))
    finally:
        await connector.aclose()
    notes = dict(preview.notes)
    assert notes["Encounter/enc-2"] == notes["Patient/pt-2"] == "waits for its location (not stored yet)"
    assert notes["Location/hh-2"].startswith("not sent: ")
    assert preview.tracker == {}


async def test_without_dhis2_the_preview_says_metadata_is_unavailable() -> None:
    connector = make_connector("http://127.0.0.1:9", ResourceBundle())  # nothing listens on port 9
    try:
        preview = await preview_payload(connector, chw_record(3))
    finally:
        await connector.aclose()
    assert preview.unavailable is not None and "metadata is not available" in preview.unavailable
    assert preview.tracker == {} and preview.notes == []
