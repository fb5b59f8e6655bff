"""Event statuses a stage maps FHIR Encounter statuses to: DHIS2's own (a typo is refused when the
mapping loads, naming the line), and a visit still to come (SCHEDULE) carries a due date."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.base import Success
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.mapping_load import load_tables, load_tracker
from gateway.mapping import MappingLoadError
from tests.dhis2.conftest import MAPPINGS, deliver_visit, demo_snapshot, edited_visit_mapping
from tests.dhis2.records import chw_record, places

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
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


async def test_a_person_whose_only_visit_is_still_to_come_is_enrolled_no_later_than_today(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Without an EpisodeOfCare the enrollment is dated by the person's first visit; when that visit
    is still to come (a planned follow-up, the only visit recorded so far), DHIS2 refuses an
    enrollment date in the future (E1020, "Enrollment date … cannot be a future date", unless the
    program allows it) and the incident date with it (E1021): the enrollment is dated today instead,
    and the scheduled event keeps its due date."""
    options = Dhis2Options(mapping=_mapping(tmp_path, "{planned: SCHEDULE, finished: COMPLETED}"),
                           uid_namespace="status-future")
    resources = places() + chw_record(1)
    resources[3] = {**resources[3], "status": "planned", "period": {"start": "2099-03-01T10:00:00+03:00"}}
    outcome, (event,) = await deliver_visit(sandbox.base_url, options, resources)
    assert isinstance(outcome, Success), outcome
    assert event["status"] == "SCHEDULE" and event["scheduledAt"].startswith("2099-03-01")
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as client:
        (enrollment,) = (await client.get("/api/tracker/enrollments")).json()["enrollments"]
    today = datetime.now(UTC).date().isoformat()
    assert enrollment["enrolledAt"][:10] <= today and enrollment["occurredAt"][:10] <= today
