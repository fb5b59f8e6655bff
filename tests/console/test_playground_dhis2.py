"""The playground with a DHIS2 destination: the tracker payload a pasted CHT record would become, sent nowhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.api.app import create_app
from gateway.delivery import DeliverySections
from gateway.services import ServicePlan
from gateway.settings import Settings, SourceConfig
from gateway.store import open_store
from tests.conftest import make_token
from tests.console.harness import console_client, csrf_of, log_in
from tests.dhis2 import cht_records as cht
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.test_end_to_end import FAST, destination
from tests.sandbox.conftest import Demo


@pytest.fixture
async def gateway(sandbox: SandboxServer, tmp_path: Path) -> AsyncIterator[tuple[Any, str, str]]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/s.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")], mappings_dir=MAPPINGS)
    store = open_store(settings.store_url)
    admin, sender = make_token(store, ("admin",), "ops"), make_token(store, ("ingest:cht",), "cht")
    sections = DeliverySections(destinations=(destination(sandbox, tmp_path / "meta.json"),), delivery=FAST)
    plan = ServicePlan(environ={"DHIS2_PAT": DEFAULT_TOKEN}, delivery=True, run_worker=True, sections=sections)
    app = create_app(settings, store=store, plan=plan)
    async with app.router.lifespan_context(app):
        yield app, admin, sender
    store.close()


async def test_a_pasted_visit_shows_the_event_dhis2_would_get(
    gateway: tuple[Any, str, str], sandbox: SandboxServer, demo: Demo
) -> None:
    app, admin, sender = gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
                                 headers={"Authorization": f"Bearer {sender}"}) as api:
        for doc in (cht.area(), cht.household(1), cht.person(1)):
            assert (await api.post("/ingest/cht", json={"doc": doc})).status_code == 200
    async with console_client(app) as console:
        await log_in(console, admin)
        form = await console.get("/console/playground")
        answer = await console.post("/console/playground", data={
            "csrf": csrf_of(form.text), "source": "cht", "record": orjson.dumps({"doc": cht.assessment(1)}).decode()})
    assert answer.status_code == 200, answer.text
    assert "DHIS2 payload for dhis2" in answer.text and "POST /api/tracker" in answer.text
    assert demo.ou("CU_KISIWA") in answer.text and demo.de("CHW_MUAC_CM") in answer.text
    assert "sent as event " in answer.text
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        stored = (await client.get("/sandbox/stats")).json()["stored"]
    assert stored["event"] == 0  # the preview sent nothing (the person alone may have been delivered)
