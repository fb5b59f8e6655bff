"""DHIS2 2.38 to 2.43: the connector detects the version and handles each one's answers.

Two ways: recorded answers (``../shared/dhis2/samples``, respx) after ``/api/system/info``
named the version, and the sandbox emulating each version's shapes over HTTP (``index``
and ``bundleReport.status`` in reports, ``responseType`` of async jobs, 409 vs 400 for
request errors, pre-2.39 aggregate conflicts, the ping endpoint).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from typer.testing import CliRunner

from dhis2_sandbox import FaultConfig, SandboxServer, SandboxSettings, create_sandbox_app
from gateway.cli.dhis2 import dhis2_app
from gateway.clock import ManualClock
from gateway.connectors.base import Job, Partial, Permanent, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options, parse_version
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.dhis2.conftest import MAPPINGS, TOKEN, demo_snapshot, make_connector, make_job
from tests.dhis2.records import chw_record, places
from tests.dhis2.samples import load_sample
from tests.dhis2.test_aggregate_dead_letters import monthly_report
from tests.sandbox.conftest import Demo

BASE = "https://dhis2.test"
VERSIONS = ["2.38.1", "2.39.3", "2.40.2", "2.41.0", "2.42.1", "2.43.0"]


def info(version: str) -> httpx.Response:
    return httpx.Response(200, json={**load_sample("system-info-response.json"), "version": version})


def detecting_connector(tmp_path: Path, source: ResourceBundle) -> Dhis2Connector:
    """A connector that learns the version from /api/system/info (metadata from a cache file)."""
    cache = tmp_path / "meta.json"
    demo_snapshot(BASE).save(cache)
    options = Dhis2Options(
        mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml",
        aggregate_mapping=MAPPINGS / "dhis2" / "chw-monthly-report.yaml",
        uid_namespace="versions",
        metadata_cache=cache,
    )
    return Dhis2Connector(Dhis2Client(BASE), options, source, ManualClock(), mappings_root=MAPPINGS)


def substitute(sample: Any, old: str, new: str) -> Any:
    return json.loads(json.dumps(sample).replace(old, new))


@pytest.mark.parametrize("version", ["2.38.0", "2.39.1"])
async def test_238_shaped_reports_are_read_after_detecting_the_version(version: str, tmp_path: Path) -> None:
    resources = places() + chw_record(1)
    connector = detecting_connector(tmp_path, ResourceBundle(resources))
    te_sample = load_sample("tracker-import-200-ok-te-created-2.38shape.json")
    event_sample = load_sample("tracker-import-200-ok-event-created-2.38shape.json")

    def answer(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if body["events"]:
            return httpx.Response(200, json=substitute(event_sample, "Y8FRzr4y2jG", body["events"][0]["event"]))
        uid = body["trackedEntities"][0]["trackedEntity"]
        return httpx.Response(200, json=substitute(te_sample, "e34WObjXCwl", uid))

    try:
        with respx.mock(base_url=BASE, assert_all_called=True) as mock:  # nothing else is called
            mock.get("/api/system/info").mock(return_value=info(version))
            mock.post("/api/tracker").mock(side_effect=answer)
            outcomes = await connector.deliver([make_job(resources[2])])
            outcomes += await connector.deliver([make_job(resources[3])])
        assert connector.server_version == parse_version(version)
        assert all(isinstance(o, Success) for o in outcomes), outcomes
    finally:
        await connector.aclose()


@pytest.mark.parametrize(("version", "status"), [("2.39.1", 409), ("2.40.0", 400)])
async def test_tracker_request_errors_are_permanent_whether_409_or_400(
    version: str, status: int, tmp_path: Path
) -> None:
    resources = places() + chw_record(1)
    connector = detecting_connector(tmp_path, ResourceBundle(resources))
    refusal = {"httpStatus": "Conflict", "httpStatusCode": status, "status": "ERROR", "message": "Invalid"}
    try:
        with respx.mock(base_url=BASE) as mock:
            mock.get("/api/system/info").mock(return_value=info(version))
            mock.post("/api/tracker").mock(return_value=httpx.Response(status, json=refusal))
            (outcome,) = await connector.deliver([make_job(resources[2])])
    finally:
        await connector.aclose()
    assert isinstance(outcome, Permanent) and outcome.reason == f"http_{status}"


async def test_a_bare_import_summary_is_read_like_a_wrapped_one(tmp_path: Path) -> None:
    # An ImportSummary outside a WebMessage, with 200 whatever its status: what DHIS2 answered
    # before 2.38 (and still does on /api/37/dataValueSets and for async task summaries).
    bare = load_sample("datavalueset-409-warning-E7610-dataelement-2.40.json")["response"]
    connector = detecting_connector(tmp_path, ResourceBundle())
    try:
        with respx.mock(base_url=BASE) as mock:
            mock.get("/api/system/info").mock(return_value=info("2.40.9"))
            mock.post("/api/dataValueSets").mock(return_value=httpx.Response(200, json=bare))
            (outcome,) = await connector.deliver([make_job(monthly_report())])
    finally:
        await connector.aclose()
    assert isinstance(outcome, Partial) and [p.reason for p in outcome.refused] == ["dhis2_E7610"] * 2


@pytest.mark.parametrize(("version", "path"), [("2.41.3", "/api/system/ping"), ("2.42.0", "/api/ping")])
async def test_ping_follows_the_version(version: str, path: str) -> None:
    client = Dhis2Client(BASE)
    try:
        with respx.mock(base_url=BASE, assert_all_called=True) as mock:
            mock.get("/api/system/info").mock(return_value=info(version))
            mock.get(path).mock(return_value=httpx.Response(200, text="pong"))
            await client.system_info()
            assert await client.ping() == path
        with respx.mock(base_url=BASE, assert_all_called=True) as mock:  # version unknown: try both
            unknown = Dhis2Client(BASE)
            mock.get("/api/ping").mock(return_value=httpx.Response(404))
            mock.get("/api/system/ping").mock(return_value=httpx.Response(200, text="pong"))
            assert await unknown.ping() == "/api/system/ping"
            await unknown.aclose()
    finally:
        await client.aclose()


# -- the sandbox emulating each version


@pytest.fixture(params=VERSIONS)
def versioned(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    settings = SandboxSettings(version=request.param)
    with SandboxServer(create_sandbox_app(None, FaultConfig(), settings)) as server:
        yield server


def jobs_of(resources: list[dict[str, Any]], kind: str) -> list[Job]:
    return [make_job(r) for r in resources if r["resourceType"] == kind]


async def test_every_version_in_range_gets_tracker_and_aggregate_data_and_its_errors_traced(
    versioned: SandboxServer, demo: Demo
) -> None:
    version = versioned.app.state.sandbox.version
    resources = places() + chw_record(1) + chw_record(2)
    # Above two objects a payload goes through the async job flow: the Patient alone is sent
    # synchronously, a visit (tracked entity, enrollment, event) asynchronously.
    connector = make_connector(versioned.base_url, ResourceBundle(resources), async_threshold=2)
    catalog = versioned.app.state.sandbox.catalog
    try:
        patient, first_visit = jobs_of(resources, "Patient")[0], jobs_of(resources, "Encounter")[0]
        assert [type(o) for o in await connector.deliver([patient])] == [Success]
        assert connector.server_version == version
        assert [type(o) for o in await connector.deliver([first_visit])] == [Success]
        # DHIS2 changes after the connector bound its mapping: DHIS2's own errors come back.
        option_set = catalog.by_id[catalog.by_id[demo.de("CHW_RDT_RESULT")]["optionSet"]["id"]]
        option_set["options"] = [o for o in option_set["options"] if catalog.by_id[o["id"]]["code"] != "POSITIVE"]
        (refused,) = await connector.deliver([jobs_of(resources, "Encounter")[1]])
        assert isinstance(refused, Permanent) and refused.reason == "dhis2_E1125"
        assert refused.detail is not None and "FHIR Observation/enc-2-rdt" in refused.detail
        element = catalog.by_id[demo.de("CHW_M_REFERRALS")]
        element["valueType"] = "INTEGER_NEGATIVE"
        (partial,) = await connector.deliver([make_job(monthly_report())])
        assert isinstance(partial, Partial) and [p.part for p in partial.refused] == ["v1", "v2"]
        # Before 2.39 a conflict has no error code: it is traced to its value by its object.
        expected = "dhis2_E7619" if version >= (2, 39) else "dhis2_conflict"
        assert {p.reason for p in partial.refused} == {expected}
        assert await connector.client.ping() == ("/api/ping" if version >= (2, 42) else "/api/system/ping")
    finally:
        await connector.aclose()
    async with httpx.AsyncClient(base_url=versioned.base_url) as control:
        stored = (await control.get("/sandbox/stats")).json()["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (2, 2, 1)


def test_gateway_dhis2_ping_reports_version_and_credentials(versioned: SandboxServer, tmp_path: Path) -> None:
    version = versioned.app.state.sandbox.settings.version
    token = tmp_path / "pat"
    token.write_text(TOKEN)
    result = CliRunner().invoke(dhis2_app, ["ping", versioned.base_url, "--token-file", str(token)])
    assert result.exit_code == 0, result.output
    path = "/api/ping" if versioned.app.state.sandbox.version >= (2, 42) else "/api/system/ping"
    assert f"DHIS2 {version} at {versioned.base_url}: up (GET {path}), credentials accepted, supported" in result.output
    token.write_text("d2pat_wrong0000000000000000000000000000")
    refused = CliRunner().invoke(dhis2_app, ["ping", versioned.base_url, "--token-file", str(token)])
    assert refused.exit_code == 1 and "credentials are refused (HTTP 401)" in refused.output


def test_a_version_below_the_range_is_named(tmp_path: Path) -> None:
    token = tmp_path / "pat"
    token.write_text(TOKEN)
    with SandboxServer(create_sandbox_app(None, FaultConfig(), SandboxSettings(version="2.37.9"))) as old:
        result = CliRunner().invoke(dhis2_app, ["ping", old.base_url, "--token-file", str(token)])
    assert result.exit_code == 1 and "DHIS2 2.37 is not supported (2.38 or later)" in result.output
