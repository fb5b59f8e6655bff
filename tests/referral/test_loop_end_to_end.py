"""The referral loop end to end over HTTP, on both store backends and both queue backends.

A CHW referral comes in (CHT report / CommCare form) → its Task is visible to a facility
client (only its own patients' Tasks) → the facility completes it through the FHIR API → the
outcome reaches the CHT / CommCare stand-in exactly once, through an outage, a restart of
delivery and an answer lost after the write → a referral nobody acted on is marked overdue
and that reaches the app too.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.connectors.referral import ReferralSettings, mark_overdue
from gateway.delivery.config import DestinationConfig
from gateway.delivery.service import DeliveryService
from gateway.store import Store
from source_sandbox import SourceSandbox
from tests.delivery.conftest import REDIS_URL
from tests.delivery.helpers import eventually
from tests.delivery.test_service import FAST
from tests.ingest.conftest import MAPPINGS, Harness, sample
from tests.referral.helpers import complete_task, facility_client
from tests.support.live_server import LiveServer

JSON = {"Content-Type": "application/json"}
DOMAIN = "pih-chw-demo"
ENVIRON = {"CHT_PASSWORD": "pull-secret", "CC_KEY": "gateway@example.org:cc-api-key"}


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL


@pytest.fixture
def sandbox() -> SourceSandbox:
    sandbox = SourceSandbox()
    case = json.loads(sample("commcare", "tb-patient-case"))
    sandbox.commcare.put_case(DOMAIN, case)  # the TB case the visit form updated lives in CommCare
    return sandbox


@pytest.fixture
def served(sandbox: SourceSandbox) -> Iterator[str]:
    with LiveServer(sandbox.app()) as server:
        yield server.url


class Loop:
    """Delivery to the two return-path destinations, which a test stops and starts again."""

    def __init__(self, store: Store, queue_url: str, prefix: str, url: str) -> None:
        self.store, self.queue_url, self.prefix = store, queue_url, prefix
        self.destinations = [
            DestinationConfig.model_validate({
                "name": "cht", "kind": "cht-api", "base_url": url, "timeout": 2,
                "auth": {"type": "basic", "username": "gateway@example.org", "secret_env": "CHT_PASSWORD"},
                "options": {"mapping": str(MAPPINGS / "cht"), "database": "medic"}}),
            DestinationConfig.model_validate({
                "name": "commcare", "kind": "commcare-api", "base_url": url, "timeout": 2,
                "auth": {"type": "api_token", "scheme": "ApiKey", "secret_env": "CC_KEY"},
                "options": {"mapping": str(MAPPINGS / "commcare"), "domain": DOMAIN,
                            "user_id": "e4f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5", "username": "gateway"}}),
        ]  # fmt: skip
        self.service: DeliveryService | None = None

    async def start(self) -> DeliveryService:
        self.service = DeliveryService.create(
            store=self.store, queue_url=self.queue_url, destinations=self.destinations, settings=FAST,
            environ=ENVIRON, queue_prefix=self.prefix,
        )  # fmt: skip
        await self.service.start()
        self.service.notify()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def settled(self, destination: str) -> bool:
        assert self.service is not None
        stats = await self.service.queue.stats(destination)
        assert stats.dead == 0
        return stats.depth == 0 and stats.cursor >= self.store.last_change_seq()


@pytest.fixture
async def loop(store: Store, queue_url: str, redis_prefix: str, served: str) -> AsyncIterator[Loop]:
    running = Loop(store, queue_url, redis_prefix, served)
    yield running
    await running.stop()


async def _ingest(gw: Harness, source: str, *records: dict[str, Any]) -> list[tuple[str, str]]:
    response = await gw.sender.post(f"/ingest/{source}", content=json.dumps(list(records)).encode(), headers=JSON)
    assert response.status_code == 200, response.text
    made = [(r["type"], r["id"]) for result in response.json()["results"] for r in result["resources"]]
    assert made
    return made


def _task_of(made: list[tuple[str, str]]) -> str:
    (task,) = [rid for rtype, rid in made if rtype == "Task"]
    return task


async def _through_outage_restart_and_lost_answer(
    loop: Loop, sandbox: SourceSandbox, api: str, destination: str, path: str, arrived: Any
) -> None:
    """Deliver with the app down (then delivery restarted), and the first answer after it lost."""
    sandbox.fail_next(api, 503, times=10_000)
    await loop.start()
    await eventually(lambda: sum(1 for name, p, _ in sandbox.requests if name == api and path in p) >= 3)
    await loop.stop()
    assert not arrived()
    sandbox.faults[api].clear()
    sandbox.lose_next_answer(api)
    await loop.start()
    await eventually(arrived)
    await eventually(lambda: loop.settled(destination))


async def test_a_cht_referral_outcome_and_an_overdue_referral_reach_the_chw_once(
    gw: Harness, loop: Loop, sandbox: SourceSandbox
) -> None:
    person = json.loads(sample("cht", "person-patient"))
    chw = json.loads(sample("cht", "person-chw"))
    report = json.loads(sample("cht", "report-data-record-assessment"))
    other_person = copy.deepcopy(person)
    other_person["doc"]["_id"] = other_person["doc"]["patient_id"] = "f0000000-0000-4000-8000-000000000002"
    other_report = copy.deepcopy(report)
    other_report["doc"]["_id"] = "0196c7a2-0000-7000-8000-000000000002"
    other_report["doc"]["fields"]["patient_uuid"] = other_person["doc"]["_id"]
    await _ingest(gw, "cht", person, chw, other_person)
    task = _task_of(await _ingest(gw, "cht", report))
    waiting = _task_of(await _ingest(gw, "cht", other_report))
    stored = gw.store.read("Task", task)
    assert stored is not None
    patient = orjson.loads(stored.content)["for"]["reference"].split("/")[1]

    facility = facility_client(gw, patient)
    try:
        assert (await facility.get(f"/fhir/Task/{waiting}")).status_code == 404  # another facility's patient
        hidden = orjson.loads(gw.store.read("Task", waiting).content)  # type: ignore[union-attr]
        refused = await facility.put(f"/fhir/Task/{waiting}", json={**hidden, "status": "completed"})
        assert refused.status_code in (403, 404)
        await complete_task(facility, task, patient)
    finally:
        await facility.aclose()

    def completed() -> list[dict[str, Any]]:
        return [d for d in sandbox.cht.reports("referral_outcome") if d["fields"]["referral_task_id"] == task]

    await _through_outage_restart_and_lost_answer(loop, sandbox, "cht", "cht", "/medic/", lambda: bool(completed()))
    (doc,) = completed()
    assert doc["fields"]["outcome"] == "completed" and doc["fields"]["patient_uuid"] == person["doc"]["_id"]
    assert doc["fields"]["visit_date"] == "2025-05-15T09:30:00Z"
    assert doc["contact"]["_id"] == chw["doc"]["_id"]  # the CHW who referred sees it
    puts = [p for name, p, _ in sandbox.requests if name == "cht" and p == f"/medic/{doc['_id']}"]
    assert len(puts) >= 5  # three refused, the one whose answer was lost, and its repeat (409)

    # The report read again (a pull re-reading a page), then edited by the CHW: the facility's
    # completion stays, and nothing new goes back.
    again = await gw.sender.post("/ingest/cht", content=json.dumps(report).encode(), headers=JSON)
    assert again.json()["results"][0]["status"] == "unchanged"
    edited = copy.deepcopy(report)
    edited["doc"]["fields"]["t_referral_follow_up_date"] = "2025-05-18"
    await _ingest(gw, "cht", edited)
    kept = orjson.loads(gw.store.read("Task", task).content)  # type: ignore[union-attr]
    assert kept["status"] == "completed" and kept["output"] and kept["restriction"]["period"]["end"] == "2025-05-18"

    # The other referral: nobody acted on it by its follow-up date.
    assert mark_overdue(gw.store, ReferralSettings(), time.time()) == 1
    assert loop.service is not None
    loop.service.notify()

    def overdue() -> list[dict[str, Any]]:
        return [d for d in sandbox.cht.reports("referral_outcome") if d["fields"]["referral_task_id"] == waiting]

    await eventually(lambda: bool(overdue()))
    await eventually(lambda: loop.settled("cht"))
    (late,) = overdue()
    assert late["fields"]["outcome"] == "overdue" and late["fields"]["needs_follow_up"] == "yes"
    assert late["fields"]["patient_uuid"] == other_person["doc"]["_id"]
    assert len(sandbox.cht.reports("referral_outcome")) == 2
    assert not sandbox.commcare.forms  # CHT's referrals go back to CHT only


async def test_a_commcare_referral_outcome_and_an_overdue_referral_update_the_case_once(
    gw: Harness, loop: Loop, sandbox: SourceSandbox
) -> None:
    case = json.loads(sample("commcare", "tb-patient-case"))
    visit = json.loads(sample("commcare", "tb-dot-visit"))
    later = copy.deepcopy(visit)
    later["id"] = "5f0c2d7e-0000-4000-8000-000000000002"
    await _ingest(gw, "commcare", case)
    task = _task_of(await _ingest(gw, "commcare", visit))
    stored = gw.store.read("Task", task)
    assert stored is not None
    patient = orjson.loads(stored.content)["for"]["reference"].split("/")[1]
    facility = facility_client(gw, patient)
    try:
        await complete_task(facility, task, patient)
    finally:
        await facility.aclose()

    def forms() -> list[dict[str, Any]]:
        return [f for f in sandbox.commcare.forms.get(DOMAIN, []) if f["form"].get("referral_task_id") == task]

    await _through_outage_restart_and_lost_answer(
        loop, sandbox, "commcare", "commcare", "/receiver/", lambda: bool(forms())
    )
    (form,) = forms()
    assert form["form"]["outcome"] == "completed"
    assert form["form"]["meta"]["userID"] == "e4f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5"  # the destination's mobile worker
    updated = sandbox.commcare.case(DOMAIN, case["case_id"])
    assert updated is not None and updated["properties"]["referral_status"] == "completed"
    assert updated["xform_ids"].count(form["id"]) == 1

    waiting = _task_of(await _ingest(gw, "commcare", later))
    assert mark_overdue(gw.store, ReferralSettings(), time.time()) == 1
    assert loop.service is not None
    loop.service.notify()
    await eventually(lambda: any(f["form"].get("referral_task_id") == waiting for f in sandbox.commcare.forms[DOMAIN]))
    await eventually(lambda: loop.settled("commcare"))
    updated = sandbox.commcare.case(DOMAIN, case["case_id"])
    assert updated is not None and updated["properties"]["referral_status"] == "overdue"
    assert len([f for f in sandbox.commcare.forms[DOMAIN] if f["form"]["@xmlns"].endswith("referral-outcome")]) == 2
    assert not sandbox.cht.reports("referral_outcome")
