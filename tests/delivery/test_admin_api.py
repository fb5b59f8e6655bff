"""The delivery admin API inside the real app: status, pause/resume, dead letters, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.api import admin_delivery
from gateway.api.app import create_app
from gateway.delivery import DeliverySections
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.services import ServicePlan
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.delivery.destination import LoopbackFhirServer, Request
from tests.delivery.helpers import eventually
from tests.delivery.workload import Workload

BROKEN = {"Patient/p2"}


def plan(index: int, request: Request) -> str:
    return "422" if request.ref in BROKEN else "ok"


class Admin:
    """An app with the delivery hook and router, and clients with and without the admin scope."""

    def __init__(self, app: object, store: Store, server: LoopbackFhirServer) -> None:
        self.app = app
        self.store = store
        self.server = server
        self.admin = self.client("admin")
        self.reader = self.client("system/*.rs")

    def client(self, *scopes: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {make_token(self.store, scopes)}"} if scopes else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
            base_url="http://gateway.test",
            headers=headers,
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Admin]:
    BROKEN.clear()
    BROKEN.add("Patient/p2")
    server = LoopbackFhirServer(plan=plan).start()
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    Workload.generate(patients=4, changes=4).apply(store)
    sections = DeliverySections(
        destinations=(
            DestinationConfig(name="shr", kind="fhir", base_url=server.url, timeout=2),
            DestinationConfig(name="hook", kind="webhook", base_url=server.url + "/hook", enabled=False),
        ),
        delivery=DeliverySettings(
            retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, max_age=3600), poll_interval=0.02
        ),
    )
    settings = Settings(store_url=f"sqlite:///{tmp_path}/unused.db", queue_url=f"sqlite:///{tmp_path}/q.db")
    app = create_app(settings, store=store, plan=ServicePlan(delivery=True, sections=sections))
    app.include_router(admin_delivery.router)
    async with app.router.lifespan_context(app):
        harness = Admin(app, store, server)
        yield harness
        await harness.admin.aclose()
        await harness.reader.aclose()
    store.close()
    server.stop()


async def dead_count(admin: httpx.AsyncClient) -> int:
    rows = (await admin.get("/admin/destinations")).json()["destinations"]
    return int(next(row for row in rows if row["name"] == "shr")["dead"])


async def has_dead(admin: httpx.AsyncClient) -> bool:
    return await dead_count(admin) > 0


async def test_admin_endpoints_need_the_admin_scope(harness: Admin) -> None:
    anonymous = harness.client()
    response = await anonymous.get("/admin/destinations")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    response = await harness.reader.get("/admin/dead-letters")
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    await anonymous.aclose()


async def test_status_dead_letters_and_replay(harness: Admin) -> None:
    admin = harness.admin
    await eventually(lambda: has_dead(admin), timeout=10)
    rows = {row["name"]: row for row in (await admin.get("/admin/destinations")).json()["destinations"]}
    assert set(rows) == {"shr", "hook"}
    shr = rows["shr"]
    assert {
        "depth",
        "oldest_pending_age",
        "in_flight",
        "retrying",
        "dead",
        "delivered_per_min",
        "circuit",
        "paused",
    } <= set(shr)
    assert (shr["kind"], shr["dead"], shr["paused"], shr["circuit"]) == ("fhir", 1, False, "closed")
    assert rows["hook"]["enabled"] is False

    listing = (
        await admin.get("/admin/dead-letters", params={"destination": "shr", "reason": "http_4*"})
    ).json()
    [letter] = listing["dead_letters"]
    assert (letter["resource"], letter["reason"], letter["status"]) == (
        "Patient/p2/_history/1",
        "http_422",
        422,
    )
    assert (await admin.get("/admin/dead-letters", params={"reason": "http_500"})).json()[
        "dead_letters"
    ] == []
    future = "2999-01-01T00:00:00+00:00"
    assert (await admin.get("/admin/dead-letters", params={"since": future})).json()["dead_letters"] == []

    detail = (await admin.get(f"/admin/dead-letters/{letter['id']}")).json()
    assert detail["response"]["status"] == 422
    assert detail["request"]["method"] == "PUT" and detail["request"]["url"].endswith("/Patient/p2")

    BROKEN.clear()
    response = await admin.post(f"/admin/dead-letters/{letter['id']}/replay")
    assert response.json() == {"replayed": 1}
    await eventually(lambda: "Patient/p2" in harness.server.snapshot(), timeout=10)
    assert await dead_count(admin) == 0


async def test_bulk_replay_needs_a_selection_and_unknown_things_are_404(harness: Admin) -> None:
    admin = harness.admin
    response = await admin.post("/admin/dead-letters/replay")
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    for response in (
        await admin.get("/admin/dead-letters/shr:999999"),
        await admin.post("/admin/dead-letters/shr:999999/replay"),
        await admin.post("/admin/destinations/nowhere/pause"),
        await admin.get("/admin/dead-letters", params={"destination": "nowhere"}),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["issue"][0]["code"] == "not-found"
    await eventually(lambda: has_dead(admin), timeout=10)
    BROKEN.clear()
    response = await admin.post("/admin/dead-letters/replay", params={"all": "true"})
    assert response.json() == {"replayed": 1}
    await eventually(lambda: "Patient/p2" in harness.server.snapshot(), timeout=10)


async def test_pause_and_resume(harness: Admin) -> None:
    admin = harness.admin
    assert (await admin.post("/admin/destinations/shr/pause")).json() == {"name": "shr", "paused": True}
    rows = (await admin.get("/admin/destinations")).json()["destinations"]
    assert next(row for row in rows if row["name"] == "shr")["paused"] is True
    assert (await admin.post("/admin/destinations/shr/resume")).json() == {"name": "shr", "paused": False}


async def test_purge_deletes_dead_letters(harness: Admin) -> None:
    admin = harness.admin
    await eventually(lambda: has_dead(admin), timeout=10)
    response = await admin.post("/admin/dead-letters/purge", params={"destination": "shr"})
    assert response.json() == {"purged": 1}
    assert await dead_count(admin) == 0


@pytest.mark.parametrize("name", ["since", "until"])
async def test_a_time_without_a_zone_outside_the_calendar_is_a_400(harness: Admin, name: str) -> None:
    # A time without a zone is the server's local time; year 1 (or 9999) there may not exist in UTC,
    # and datetime.astimezone() raised a ValueError (a 500).
    for method, path in (("GET", "/admin/dead-letters"), ("POST", "/admin/dead-letters/replay"),
                         ("POST", "/admin/dead-letters/purge")):  # fmt: skip
        response = await harness.admin.request(method, path, params={name: "0001-01-01T00:00:00"})
        assert response.status_code == 400, (path, response.text)
        (issue,) = response.json()["issue"]
        assert issue["expression"] == [f"query.{name}"] and name in issue["diagnostics"], issue
    within = await harness.admin.get("/admin/dead-letters", params={name: "0001-01-02T00:00:00"})
    assert within.status_code == 200, within.text
