"""The DHIS2 destination's periodic tasks, on a manual clock against the sandbox over HTTP,
and the scheduler inside ``gateway serve`` (its ``ServicePlan``) and ``gateway worker`` (``run_worker``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.api.app import create_app
from gateway.clock import ManualClock
from gateway.connectors.dhis2.mcsd import resource_id
from gateway.connectors.dhis2.measure import report_id
from gateway.connectors.dhis2.orgunits import ORG_UNIT_SYSTEM
from gateway.connectors.dhis2.periods import parse_period
from gateway.connectors.dhis2.tasks import dhis2_tasks
from gateway.delivery import DeliverySections
from gateway.delivery.config import DestinationConfig
from gateway.scheduler import Scheduler
from gateway.services import ServicePlan, run_worker
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.records import chw_record, places
from tests.dhis2.test_end_to_end import FAST
from tests.sandbox.conftest import Demo

MEASURE = "urn:chw-gateway:Measure:chw-monthly-report"
JUNE_3 = datetime(2024, 6, 3, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
HOUR = 3600.0
ENVIRON = {"DHIS2_PAT": DEFAULT_TOKEN}


def put(store: Store, resources: list[dict[str, Any]]) -> None:
    with store.transaction() as tx:
        for resource in resources:
            tx.update(resource, skip_unchanged=True)


def destination(server: SandboxServer, tmp_path: Path, **schedule: Any) -> DestinationConfig:
    return DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": server.base_url,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["MeasureReport"]},
            "options": {
                "mapping": str(MAPPINGS / "dhis2" / "chw-household-visit.yaml"),
                "aggregate_mapping": str(MAPPINGS / "dhis2" / "chw-monthly-report.yaml"),
                "metadata_cache": str(tmp_path / "meta.json"),
                "report": {"measure": str(MAPPINGS / "dhis2" / "chw-monthly-measure.yaml")},
                "schedule": {"metadata_refresh": "6h", "org_units_pull": "1d", "monthly_report": "1d", **schedule},
            },
        }
    )


def may_report(store: Store, demo: Demo) -> dict[str, Any] | None:
    rid = report_id(MEASURE, f"{ORG_UNIT_SYSTEM}|{demo.ou('CU_KISIWA')}", parse_period("202405"))
    found = store.read("MeasureReport", rid)
    return None if found is None else dict(orjson.loads(found.content))


def households(report: dict[str, Any]) -> int:
    return int(report["group"][0]["measureScore"]["value"])


async def test_each_task_runs_at_its_time_writes_only_what_changed_and_survives_dhis2_failing(
    store: Store, sandbox: SandboxServer, demo: Demo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(store, places() + chw_record(1) + chw_record(2))
    clock = ManualClock(JUNE_3 + 30 * 60)  # 00:30 UTC
    tasks = dhis2_tasks(destination(sandbox, tmp_path, offset="2h"), store=store, environ=ENVIRON, clock=clock)
    scheduler = Scheduler(tasks.periodic(), clock, on_stop=[tasks.aclose])
    assert [(t.name, t.interval, t.offset, t.cluster_once) for t in scheduler.tasks] == [
        ("dhis2/metadata", 6 * HOUR, 2 * HOUR, False),  # each process's own metadata cache
        ("dhis2/org-units", 24 * HOUR, 2 * HOUR, True),  # writes to the shared store: once
        ("dhis2/report", 24 * HOUR, 2 * HOUR, True),  # sends a report: once
    ]
    caplog.set_level(logging.INFO, logger="gateway.scheduler")
    await scheduler.start()
    try:
        # At start: the org units and the report (May, the last closed month).
        await eventually(lambda: scheduler.runs["dhis2/org-units"] == 1 and scheduler.runs["dhis2/report"] == 1)
        assert scheduler.runs["dhis2/metadata"] == 0 and scheduler.failures == dict.fromkeys(scheduler.runs, 0)
        for uid in demo.catalog.by_id:
            if demo.catalog.get("organisationUnits", uid) is not None:
                assert store.read("Location", resource_id(uid)) is not None
        report = may_report(store, demo)
        assert report is not None and report["meta"]["versionId"] == "1"
        assert report["reporter"] == {"identifier": {"system": ORG_UNIT_SYSTEM, "value": demo.ou("CU_KISIWA")}}
        assert report["period"] == {"start": "2024-05-01", "end": "2024-05-31"} and households(report) == 2
        cached = orjson.loads((tmp_path / "meta.json").read_bytes())["fetchedAt"]

        # 02:00 UTC: every task's time (6h and 1d boundaries, offset 2h).
        await clock.advance(1.5 * HOUR)
        await eventually(lambda: scheduler.runs == {"dhis2/metadata": 1, "dhis2/org-units": 2, "dhis2/report": 2})
        assert orjson.loads((tmp_path / "meta.json").read_bytes())["fetchedAt"] != cached
        assert "9 org units, 0 Location/Organization resources written" in caplog.text  # nothing changed
        assert "202405: 1 org units, 0 reports written" in caplog.text
        assert may_report(store, demo)["meta"]["versionId"] == "1"  # type: ignore[index]

        # 08:00: only the 6-hourly metadata refresh.
        await clock.advance(6 * HOUR)
        await eventually(lambda: scheduler.runs["dhis2/metadata"] == 2)
        assert (scheduler.runs["dhis2/org-units"], scheduler.runs["dhis2/report"]) == (2, 2)

        # A visit of May syncs late; DHIS2 is down at the next daily run, up again the day after.
        put(store, chw_record(3))
        async with httpx.AsyncClient(base_url=sandbox.base_url) as control:
            await control.post("/sandbox/outages", json={"seconds": 60, "mode": "502"})
            await clock.advance(18 * HOUR)  # 02:00 the next day
            await eventually(lambda: scheduler.runs["dhis2/org-units"] == 3 and scheduler.runs["dhis2/report"] == 3)
            assert scheduler.failures["dhis2/org-units"] == 1
            await control.delete("/sandbox/outages")
        # The report reads what is stored (with the cached metadata): it ran, and counts the late visit.
        assert households(may_report(store, demo) or {}) == 3
        assert "scheduled task dhis2/org-units failed: Dhis2HttpError" in caplog.text
        assert "Amina" not in caplog.text and "CL-0000" not in caplog.text  # no patient data in logs
        await clock.advance(24 * HOUR)
        await eventually(lambda: scheduler.runs["dhis2/org-units"] == 4)
        assert scheduler.failures["dhis2/org-units"] == 1
    finally:
        await scheduler.stop()


async def test_gateway_serve_computes_the_report_and_delivers_it(
    sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/api.db",
        queue_url=f"sqlite:///{tmp_path}/queue.db",
        destinations=[destination(sandbox, tmp_path)],
        delivery=FAST,
    )
    serve = ServicePlan.for_serve(settings, ENVIRON)
    assert serve.delivery and serve.scheduler
    off = settings.model_copy(update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})})
    assert not ServicePlan.for_serve(off, ENVIRON).scheduler
    store = open_store(settings.store_url)
    put(store, places() + chw_record(1) + chw_record(2, rdt="260385009"))
    clock = ManualClock(JUNE_3)
    app = create_app(settings, store=store, plan=ServicePlan(environ=ENVIRON, delivery=True, scheduler=True,
                                                             scheduler_clock=clock))
    params = {"dataSet": demo.data_set, "period": "202405", "orgUnit": demo.ou("CU_KISIWA")}
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            base_url=sandbox.base_url, headers={"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
        ) as dhis2:

            async def delivered() -> bool:
                values = (await dhis2.get("/api/dataValueSets", params=params)).json()["dataValues"]
                return len(values) > 0

            await eventually(delivered)
            values = (await dhis2.get("/api/dataValueSets", params=params)).json()["dataValues"]
            by_key = {(v["dataElement"], v["categoryOptionCombo"]): v["value"] for v in values}
            assert by_key[(demo.de("CHW_M_HH_VISITED"), demo.coc("default"))] == "2"
            assert by_key[(demo.de("CHW_M_RDT_POS"), demo.coc("AGE_U5"))] == "1"
    finally:
        store.close()


async def test_gateway_worker_runs_the_scheduled_tasks(sandbox: SandboxServer, demo: Demo, tmp_path: Path) -> None:
    sections = DeliverySections(destinations=(destination(sandbox, tmp_path),), delivery=FAST)
    store_url = f"sqlite:///{tmp_path}/store.db"
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(Settings(store_url=store_url, queue_url=f"sqlite:///{tmp_path}/queue.db"), sections,
                   environ=ENVIRON, stop=stop)
    )
    store = open_store(store_url)
    try:
        await eventually(lambda: store.read("Location", resource_id(demo.ou("CU_KISIWA"))) is not None)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
        store.close()


async def test_a_report_whose_visits_are_all_retracted_or_deleted_is_recomputed(
    store: Store, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    put(store, places() + chw_record(1) + chw_record(2))
    clock = ManualClock(JUNE_3 + 30 * 60)
    tasks = dhis2_tasks(destination(sandbox, tmp_path), store=store, environ=ENVIRON, clock=clock)
    try:
        await tasks.report()
        assert households(may_report(store, demo) or {}) == 2
        visit_types = ("Encounter", "Observation", "ServiceRequest", "MedicationDispense")
        # The first visit (and everything recorded in it) entered in error: no longer counted.
        put(store, [{**r, "status": "entered-in-error"} for r in chw_record(1) if r["resourceType"] in visit_types])
        await tasks.report()
        report = may_report(store, demo)
        assert report is not None and report["meta"]["versionId"] == "2" and households(report) == 1
        # Both deleted: nothing is left to count (or even to find) in that org unit, and its
        # report says so instead of keeping the withdrawn visit.
        with store.transaction() as tx:
            for r in chw_record(1) + chw_record(2):
                if r["resourceType"] in visit_types:
                    tx.delete(r["resourceType"], r["id"])
        await tasks.report()
        report = may_report(store, demo)
        assert report is not None and report["meta"]["versionId"] == "3"
        assert households(report) == 0
        assert all(group["measureScore"]["value"] == 0 for group in report["group"])
    finally:
        await tasks.aclose()
