"""The referral loop across real processes: ``gateway serve`` killed mid-delivery and started again.

Configured and operated as the README's "Referral loop" section says (its destination shapes,
``gateway clients create`` / ``set-policy``, ``gateway referrals overdue``), over PostgreSQL +
Redis and over SQLite + SQLite. A CHW referral comes in over HTTP → a facility client sees
its Task (and only its patient's) and completes it → the CHT / CommCare stand-in refuses a few
attempts (a link failure), then stores the outcome but its answer never comes, and the gateway
is SIGKILLed while it waits → a new ``gateway serve`` on the same store and queue, the link
still failing at first, sends it again → the app holds the completed outcome exactly once; a
referral nobody acted on is marked overdue and reaches the app too.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from source_sandbox import SourceSandbox
from tests.delivery.conftest import REDIS_URL
from tests.delivery.helpers import eventually
from tests.ingest.conftest import MAPPINGS, sample
from tests.referral.helpers import complete_task
from tests.support.live_server import LiveServer
from tests.support.processes import GatewayProcess, gateway_cli

DOMAIN = "pih-chw-demo"
MOBILE_WORKER = "e4f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5"
# The destinations' secrets, in the environment of the gateway's processes (secret_env), as in production.
SECRETS = {"CHT_PASSWORD": "pull-secret", "CC_KEY": "gateway@example.org:cc-api-key"}
REFUSED = 3  # attempts the link refuses before the one whose answer is lost, and again after the restart
STALL = 8.0  # seconds the lost answer takes: the gateway is killed long before
# The README's clients: the app's sender, a monitor (admin), and the facility EMR.
CLIENTS = {source: {source: (f"ingest:{source}",), "monitor": ("admin",),
                    "emr": ("system/Task.rus system/Encounter.crus system/Condition.crus",)}
           for source in ("cht", "commcare")}  # fmt: skip


@pytest.fixture(params=["postgresql+redis", "sqlite+sqlite"])
def backends(request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str) -> dict[str, str]:
    """The store and queue settings of one pair of backends."""
    if request.param == "sqlite+sqlite":
        return {"store_url": f"sqlite:///{tmp_path}/store.db", "queue_url": f"sqlite:///{tmp_path}/queue.db"}
    return {"store_url": request.getfixturevalue("pg_schema_url"), "queue_url": REDIS_URL,
            "queue_prefix": redis_prefix}  # fmt: skip


@pytest.fixture
def sandbox() -> SourceSandbox:
    sandbox = SourceSandbox()
    sandbox.commcare.put_case(DOMAIN, json.loads(sample("commcare", "tb-patient-case")))
    return sandbox


@pytest.fixture
def app_url(sandbox: SourceSandbox) -> Iterator[str]:
    with LiveServer(sandbox.app()) as server:
        yield server.url


@dataclass
class Deployment:
    """A configuration file and the ``gateway serve`` currently running it."""

    config: Path
    cwd: Path
    server: GatewayProcess | None = None

    def cli(self, *args: str) -> str:
        """``gateway ARGS --config <file>``: its output."""
        return gateway_cli(*args, "--config", str(self.config), cwd=self.cwd, environ=SECRETS)

    def create_client(self, name: str, *scopes: str) -> str:
        """``gateway clients create NAME --scope …``: the token it prints on its last line."""
        return self.cli("clients", "create", name, *(f"--scope={scope}" for scope in scopes)).strip().splitlines()[-1]

    def start(self) -> GatewayProcess:
        self.server = GatewayProcess(self.config, self.cwd, SECRETS).wait_ready()
        return self.server

    async def start_with_clients(self, clients: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
        """Create the clients (name: scopes) and start serving; the tokens by name.

        The first command creates the store; the rest run at once, as an operator's terminals would.
        """
        (first, scopes), *rest = clients.items()
        tokens = {first: self.create_client(first, *scopes)}
        starting = asyncio.create_task(asyncio.to_thread(self.start))
        try:
            made = await asyncio.gather(*(asyncio.to_thread(self.create_client, name, *s) for name, s in rest))
        finally:
            await starting
        tokens.update(zip([name for name, _ in rest], made, strict=True))
        return tokens

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def client(self, token: str) -> httpx.AsyncClient:
        """A client of the process running now (a restarted one listens on another port)."""
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def deployment(tmp_path: Path, backends: dict[str, str], app_url: str) -> Iterator[Deployment]:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        **backends,
        "mappings_dir": str(MAPPINGS),
        "sources": [{"name": "cht", "kind": "cht", "mapping": "cht"},
                    {"name": "commcare", "kind": "commcare", "mapping": "commcare"}],
        "destinations": [
            {"name": "cht-outcomes", "kind": "cht-api", "base_url": app_url, "timeout": "20s",
             "auth": {"type": "basic", "username": "gateway@example.org", "secret_env": "CHT_PASSWORD"},
             "options": {"mapping": str(MAPPINGS / "cht"), "database": "medic"}},
            {"name": "commcare-outcomes", "kind": "commcare-api", "base_url": app_url, "timeout": "20s",
             "auth": {"type": "api_token", "scheme": "ApiKey", "secret_env": "CC_KEY"},
             "options": {"mapping": str(MAPPINGS / "commcare"), "domain": DOMAIN, "user_id": MOBILE_WORKER,
                         "username": "gateway"}},
        ],
        # Short waits so the test is quick; a lease short enough that a killed worker's claim comes back soon.
        "delivery": {"retry": {"initial_delay": "0.2s", "max_delay": "0.5s", "max_age": "1h"},
                     "poll_interval": "0.1s", "lease": "3s", "drain_timeout": "1s"},
        "referral": {"overdue_check": False},  # the operator runs `gateway referrals overdue`
    }))  # fmt: skip
    running = Deployment(config, tmp_path)
    yield running
    if running.server is not None:
        running.server.stop()


async def _ingest(client: httpx.AsyncClient, source: str, *records: dict[str, Any]) -> list[tuple[str, str]]:
    response = await client.post(f"/ingest/{source}", json=list(records))
    assert response.status_code == 200, response.text
    return [(r["type"], r["id"]) for result in response.json()["results"] for r in result["resources"]]


def _one(made: list[tuple[str, str]], resource_type: str) -> str:
    (rid,) = [rid for rtype, rid in made if rtype == resource_type]
    return rid


async def _facility_completes(gw: Deployment, token: str, task: str, patient: str, hidden: str | None = None) -> None:
    """The README's facility client (Task scopes, a data policy) completes its patient's Task, and sees no other."""
    gw.cli("clients", "set-policy", "emr", "--patient", f"Patient/{patient}")
    async with gw.client(token) as emr:
        if hidden is not None:
            await eventually(lambda: _hidden(emr, hidden), timeout=10, every=0.2)  # "within a second"
        await complete_task(emr, task, patient)


async def _hidden(emr: httpx.AsyncClient, task: str) -> bool:
    return (await emr.get(f"/fhir/Task/{task}")).status_code == 404


async def _settled(gw: Deployment, token: str, destination: str) -> bool:
    """Nothing left to deliver to ``destination`` and nothing dead, as ``GET /admin/destinations`` says."""
    async with gw.client(token) as ops:
        rows = (await ops.get("/admin/destinations")).json()["destinations"]
    (row,) = [r for r in rows if r["name"] == destination]
    assert row["dead"] == 0, row
    return bool(row["depth"] == 0 and row["in_flight"] == 0 and row["lag_changes"] == 0)


async def _kill_mid_delivery_and_restart(
    gw: Deployment, sandbox: SourceSandbox, api: str, path: str, arrived: Callable[[], int]
) -> None:
    """The link refuses, then the outcome is written but its answer stalls: SIGKILL, and a new process."""
    assert gw.server is not None

    def attempts() -> int:
        return sum(1 for name, p, _ in sandbox.requests if name == api and path in p)

    await eventually(lambda: attempts() == REFUSED + 1, timeout=30, every=0.02)
    await eventually(lambda: arrived() == 1, timeout=5, every=0.02)  # written, its answer not sent yet
    gw.server.kill()
    assert attempts() == REFUSED + 1 and arrived() == 1
    sandbox.fail_next(api, 503, times=REFUSED)  # the link is still down when the gateway comes back
    gw.start()
    await eventually(lambda: attempts() >= 2 * REFUSED + 2, timeout=30, every=0.05)  # the repeat after the lease


async def test_a_cht_outcome_survives_a_kill_mid_delivery_and_reaches_the_chw_once(
    deployment: Deployment, sandbox: SourceSandbox
) -> None:
    gw = deployment
    person, chw = json.loads(sample("cht", "person-patient")), json.loads(sample("cht", "person-chw"))
    report = json.loads(sample("cht", "report-data-record-assessment"))
    other_person = copy.deepcopy(person)
    other_person["doc"]["_id"] = other_person["doc"]["patient_id"] = "f0000000-0000-4000-8000-000000000002"
    other_report = copy.deepcopy(report)
    other_report["doc"]["_id"] = "0196c7a2-0000-7000-8000-000000000002"
    other_report["doc"]["fields"]["patient_uuid"] = other_person["doc"]["_id"]
    tokens = await gw.start_with_clients(CLIENTS["cht"])
    sender, admin = tokens["cht"], tokens["monitor"]
    async with gw.client(sender) as cht:
        patient = _one(await _ingest(cht, "cht", person), "Patient")
        await _ingest(cht, "cht", chw, other_person)
        task = _one(await _ingest(cht, "cht", report), "Task")
        waiting = _one(await _ingest(cht, "cht", other_report), "Task")

    sandbox.fail_next("cht", 503, times=REFUSED)
    sandbox.lose_next_answer("cht", delay=STALL)
    await _facility_completes(gw, tokens["emr"], task, patient, hidden=waiting)

    def outcomes(task_id: str) -> list[dict[str, Any]]:
        return [d for d in sandbox.cht.reports("referral_outcome") if d["fields"]["referral_task_id"] == task_id]

    await _kill_mid_delivery_and_restart(gw, sandbox, "cht", "/medic/", lambda: len(outcomes(task)))
    await eventually(lambda: _settled(gw, admin, "cht-outcomes"), timeout=30, every=0.2)
    (doc,) = outcomes(task)
    assert doc["fields"]["outcome"] == "completed" and doc["fields"]["patient_uuid"] == person["doc"]["_id"]
    assert doc["fields"]["visit_date"] == "2025-05-15T09:30:00Z"
    assert doc["contact"]["_id"] == chw["doc"]["_id"]  # the CHW who referred gets it
    calls = [method for (name, p, _), method in zip(sandbox.requests, sandbox.methods, strict=True)
             if name == "cht" and p == f"/medic/{doc['_id']}"]  # fmt: skip
    # refused, written (answer lost), refused again, repeated (409), and the stored report read
    # once, which says what was sent: a repeat, not written again
    assert calls == ["PUT"] * (2 * REFUSED + 2) + ["GET"]

    assert gw.cli("referrals", "overdue").strip() == "1 referral(s) marked overdue"
    await eventually(lambda: len(outcomes(waiting)) == 1, timeout=30, every=0.1)
    await eventually(lambda: _settled(gw, admin, "cht-outcomes"), timeout=30, every=0.2)
    (late,) = outcomes(waiting)
    assert late["fields"]["outcome"] == "overdue" and late["fields"]["needs_follow_up"] == "yes"
    assert late["fields"]["patient_uuid"] == other_person["doc"]["_id"]
    assert len(sandbox.cht.reports("referral_outcome")) == 2 and not sandbox.commcare.forms
    assert gw.server is not None and gw.server.stop() == 0


async def test_a_commcare_outcome_survives_a_kill_mid_delivery_and_updates_the_case_once(
    deployment: Deployment, sandbox: SourceSandbox
) -> None:
    gw = deployment
    case = json.loads(sample("commcare", "tb-patient-case"))
    visit = json.loads(sample("commcare", "tb-dot-visit"))
    later = copy.deepcopy(visit)
    later["id"] = "5f0c2d7e-0000-4000-8000-000000000002"
    tokens = await gw.start_with_clients(CLIENTS["commcare"])
    sender, admin = tokens["commcare"], tokens["monitor"]
    async with gw.client(sender) as cc:
        patient = _one(await _ingest(cc, "commcare", case), "Patient")
        task = _one(await _ingest(cc, "commcare", visit), "Task")

    sandbox.fail_next("commcare", 503, times=REFUSED)
    sandbox.lose_next_answer("commcare", delay=STALL)
    await _facility_completes(gw, tokens["emr"], task, patient)

    def outcomes(task_id: str) -> list[dict[str, Any]]:
        return [f for f in sandbox.commcare.forms.get(DOMAIN, []) if f["form"].get("referral_task_id") == task_id]

    await _kill_mid_delivery_and_restart(gw, sandbox, "commcare", "/receiver/", lambda: len(outcomes(task)))
    await eventually(lambda: _settled(gw, admin, "commcare-outcomes"), timeout=30, every=0.2)
    (form,) = outcomes(task)
    assert form["form"]["outcome"] == "completed" and form["form"]["meta"]["userID"] == MOBILE_WORKER
    updated = sandbox.commcare.case(DOMAIN, case["case_id"])
    assert updated is not None and updated["properties"]["referral_status"] == "completed"
    assert updated["xform_ids"].count(form["id"]) == 1
    posts = [p for name, p, _ in sandbox.requests if name == "commcare" and "/receiver/" in p]
    assert len(posts) == 2 * REFUSED + 2  # refused, written (answer lost), refused again, the same form again

    async with gw.client(sender) as cc:  # a later visit of the patient refers again; nobody acts on it
        waiting = _one(await _ingest(cc, "commcare", later), "Task")
    assert gw.cli("referrals", "overdue").strip() == "1 referral(s) marked overdue"
    await eventually(lambda: len(outcomes(waiting)) == 1, timeout=30, every=0.1)
    await eventually(lambda: _settled(gw, admin, "commcare-outcomes"), timeout=30, every=0.2)
    updated = sandbox.commcare.case(DOMAIN, case["case_id"])
    assert updated is not None and updated["properties"]["referral_status"] == "overdue"
    referral_forms = [f for f in sandbox.commcare.forms[DOMAIN] if f["form"]["@xmlns"].endswith("referral-outcome")]
    assert len(referral_forms) == 2 and not sandbox.cht.reports("referral_outcome")
    assert gw.server is not None and gw.server.stop() == 0
