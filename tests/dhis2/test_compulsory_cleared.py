"""A compulsory program stage data element whose FHIR source is withdrawn is not cleared in DHIS2.

DHIS2 refuses a null value for a compulsory data element of an event whose data values it
validates (a COMPLETED event, or any event of a stage validated ON_UPDATE_AND_INSERT): E1076,
dhis2-core ``validateNullDataValues``; "removing mandatory attributes and data values is never
allowed" (tracker docs, Validation). Sent as null, the refusal would hold back the whole event:
the other values withdrawn or corrected with it would never reach DHIS2. The element is left out
instead (DHIS2 keeps its value), as mandatory attributes are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.clock import SystemClock
from gateway.connectors.base import Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import MAPPINGS, VISIT_MAPPING, make_job, pat_auth
from tests.dhis2.records import chw_record, places

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
VISIT_TYPE = """      - data_element: code:CHW_VISIT_TYPE
        source: Encounter
        value: "type.coding.code.first() | code('dhis2-visit-type')"
"""
# The compulsory visit type recorded as an Observation of its own (the MUAC reading stands in).
FROM_OBSERVATION = """      - data_element: code:CHW_VISIT_TYPE
        code: ["http://loinc.org|56072-2"]
        value: "'FOLLOW_UP'"
"""
STAGE = """    occurred_at: "period.start"
"""


def _mapping(tmp_path: Path) -> Path:
    text = VISIT_MAPPING.read_text()
    assert VISIT_TYPE in text and STAGE in text
    text = text.replace(VISIT_TYPE, FROM_OBSERVATION, 1)
    text = text.replace(STAGE, STAGE + "    status: {finished: COMPLETED}\n", 1)
    path = tmp_path / "visit.yaml"
    path.write_text(text)
    for beside in VISIT_MAPPING.parent.glob("*.yaml"):
        if beside.name != VISIT_MAPPING.name:
            (tmp_path / beside.name).write_text(beside.read_text())
    return path


async def _event(sandbox: SandboxServer, uid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
        response = await client.get(f"/api/tracker/events/{uid}")
    assert response.status_code == 200
    event: dict[str, Any] = response.json()
    return event


async def test_a_withdrawn_compulsory_value_is_kept_and_the_rest_of_the_event_goes_through(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    resources = places() + chw_record(1)
    encounter = resources[3]
    muac = next(r for r in resources if r["id"].endswith("-muac"))
    fever = next(r for r in resources if r["id"].endswith("-fever"))
    bundle = ResourceBundle(resources)
    options = Dhis2Options(mapping=_mapping(tmp_path), uid_namespace="compulsory")
    conn = Dhis2Connector(
        Dhis2Client(sandbox.base_url, auth=pat_auth()), options, bundle, SystemClock(), mappings_root=MAPPINGS
    )
    try:
        (created,) = await conn.deliver([make_job(encounter)])
        assert isinstance(created, Success), created
        uid = (created.detail or "").split()[-1]
        event = await _event(sandbox, uid)
        assert event["status"] == "COMPLETED"
        visit_type, fever_element = _element(conn, "CHW_VISIT_TYPE"), _element(conn, "CHW_FEVER")
        elements = {v["dataElement"]: v["value"] for v in event["dataValues"]}
        assert (elements[visit_type], elements[fever_element]) == ("FOLLOW_UP", "true")

        # The reading is voided and the fever answer withdrawn: the visit type (compulsory) has no
        # source any more, the fever value (optional) is cleared.
        bundle.add({**muac, "status": "entered-in-error"})
        bundle.remove("Observation", fever["id"])
        (updated,) = await conn.deliver([make_job({**muac, "status": "entered-in-error"})])
        assert isinstance(updated, Success), updated
        assert conn._tracker is not None
        planned = conn._tracker.plan(encounter, bundle)
        (ev,) = (o for o in planned.objects if o.tracker_type == "EVENT")
        sent = {v["dataElement"]: v["value"] for v in ev.payload["dataValues"]}
        assert visit_type not in sent and sent[fever_element] is None
    finally:
        await conn.aclose()
    event = await _event(sandbox, uid)
    values = {v["dataElement"]: v["value"] for v in event["dataValues"]}
    assert values[visit_type] == "FOLLOW_UP"  # DHIS2 keeps the compulsory value
    assert fever_element not in values  # the withdrawn fever answer is cleared


def _element(conn: Dhis2Connector, code: str) -> str:
    assert conn.snapshot is not None
    found = conn.snapshot.by_code("dataElements", code)
    assert found is not None
    return str(found["id"])
