"""Event statuses a stage maps FHIR Encounter statuses to: DHIS2's own (a typo is refused when the
mapping loads, naming the line), and a visit still to come (SCHEDULE) carries a due date."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.clock import SystemClock
from gateway.connectors.base import Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.mapping_load import load_tables, load_tracker
from gateway.connectors.dhis2.sources import ResourceBundle
from gateway.mapping import MappingLoadError
from tests.dhis2.conftest import MAPPINGS, demo_snapshot, make_job, pat_auth
from tests.dhis2.records import chw_record, places

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
STAGE = """    occurred_at: "period.start"
"""


def _mapping(tmp_path: Path, status: str) -> Path:
    """The shipped tracker mapping with a stage status map, and the files it names beside it."""
    shipped = (MAPPINGS / "dhis2" / "chw-household-visit.yaml").read_text()
    assert STAGE in shipped
    path = tmp_path / "visit.yaml"
    path.write_text(shipped.replace(STAGE, STAGE + f"    status: {status}\n", 1))
    for beside in (MAPPINGS / "dhis2").glob("*.yaml"):
        if beside.name != "chw-household-visit.yaml":
            (tmp_path / beside.name).write_text(beside.read_text())
    return path


def test_a_status_dhis2_does_not_have_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = _mapping(tmp_path, "{planned: SCHEDULED, finished: COMPLETED}")
    with pytest.raises(MappingLoadError) as refused:
        load_tracker(path, demo_snapshot(), load_tables(MAPPINGS, []))
    assert f"{path}:" in str(refused.value) and "SCHEDULE" in str(refused.value)


async def test_a_planned_visit_is_a_scheduled_event_with_its_due_date(sandbox: SandboxServer, tmp_path: Path) -> None:
    options = Dhis2Options(mapping=_mapping(tmp_path, "{planned: SCHEDULE, finished: COMPLETED}"),
                           uid_namespace="status")
    resources = places() + chw_record(1)
    resources[3] = {**resources[3], "status": "planned"}
    conn = Dhis2Connector(Dhis2Client(sandbox.base_url, auth=pat_auth()), options, ResourceBundle(resources),
                          SystemClock(), mappings_root=MAPPINGS)
    try:
        (outcome,) = await conn.deliver([make_job(resources[3])])
    finally:
        await conn.aclose()
    assert isinstance(outcome, Success), outcome
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
        (event,) = (await client.get("/api/tracker/events")).json()["events"]
    assert event["status"] == "SCHEDULE" and event["scheduledAt"].startswith("2024-05-02")
