"""A SQLite store whose file cannot be written (the disk is full, an I/O error, the file turned
read-only): a write gets `503` ``transient`` with ``Retry-After`` and changes nothing, like a
PostgreSQL store that cannot be reached, not a 500 as for a bug in the gateway; once there is room
again the same request succeeds, and what was stored before is intact.

SQLite answers ``SQLITE_FULL`` ("database or disk is full") when its file reaches the disk's end
and, identically, when it reaches ``PRAGMA max_page_count``: the test caps the file's pages at its
current size, as a disk that just filled up does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import open_store
from gateway.store.sqlite import SQLiteStore
from tests.conftest import make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


def _patient(rid: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng", "given": ["Grace"] * 20}]}


def _cap_pages(store: SQLiteStore, full: bool) -> None:
    """Cap the file at its current size (``full``), or lift the cap, on every connection the store opened."""
    for conn in list(store._all):
        pages = conn.execute("PRAGMA page_count").fetchone()[0] if full else 1_073_741_823
        conn.execute(f"PRAGMA max_page_count = {pages}")


@pytest.fixture
async def sqlite_api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteStore]]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/store.db", allowed_hosts=["gateway.test"],
                        rate_limit=MACHINE_SPEED_LIMITS, audit={"enabled": False},
                        bulk_export={"directory": str(tmp_path / "exports")})  # fmt: skip
    store = open_store(settings.store_url)
    assert isinstance(store, SQLiteStore)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        token = make_token(store, ("system/*.cruds",), name=f"c-{uuid.uuid4().hex[:8]}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
                                     headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            yield client, store
    store.close()


async def test_a_full_disk_answers_503_transient_and_the_write_succeeds_once_there_is_room(
    sqlite_api: tuple[httpx.AsyncClient, SQLiteStore],
) -> None:
    client, store = sqlite_api
    assert (await client.put("/fhir/Patient/p0", json=_patient("p0"))).status_code == 201
    _cap_pages(store, full=True)  # the disk is full from here on
    answers = []
    for n in range(1, 200):
        answer = await client.put(f"/fhir/Patient/p{n}", json=_patient(f"p{n}"))
        answers.append(answer)
        if answer.status_code != 201:
            break
    failed = answers[-1]
    assert failed.status_code == 503, failed.text
    assert failed.headers["Retry-After"] == "5"
    assert failed.json()["issue"][0]["code"] == "transient"
    rid = str(failed.request.url).rsplit("/", 1)[1]
    assert (await client.get(f"/fhir/Patient/{rid}")).status_code == 404  # nothing of it applied

    _cap_pages(store, full=False)  # room again
    assert (await client.put(f"/fhir/Patient/{rid}", json=_patient(rid))).status_code == 201
    assert (await client.get("/fhir/Patient/p0")).status_code == 200
    total = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"]
    assert total == len(answers) + 1
