"""Event statuses a stage maps FHIR Encounter statuses to: DHIS2's own (a typo is refused when the
mapping loads, naming the line), and a visit still to come (SCHEDULE) carries a due date."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhis2_sandbox import SandboxServer
from gateway.connectors.base import Success
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.mapping_load import load_tables, load_tracker
from gateway.mapping import MappingLoadError
from tests.dhis2.conftest import MAPPINGS, deliver_visit, demo_snapshot, edited_visit_mapping
from tests.dhis2.records import chw_record, places

STAGE = """    occurred_at: "period.start"
"""


def _mapping(tmp_path: Path, status: str) -> Path:
    """The shipped tracker mapping with a stage status map."""
    return edited_visit_mapping(tmp_path, STAGE, STAGE + f"    status: {status}\n")


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
    outcome, (event,) = await deliver_visit(sandbox.base_url, options, resources)
    assert isinstance(outcome, Success), outcome
    assert event["status"] == "SCHEDULE" and event["scheduledAt"].startswith("2024-05-02")
