"""Source record ids on both store backends: very long ones are stored, held, edited, deleted;
ones with control characters are held.

The record id is the key of the tables that remember each record (what it produced, its
latest version, its quarantine entry). PostgreSQL refuses a B-tree entry past ~2.7 KB, so a
CHT document whose ``_id`` was 9 KB of text was answered 503 "retry later" on PostgreSQL (and
would be sent again for ever), while SQLite stored it.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store
from tests.ingest.conftest import Harness, make_app

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def both(store: Store, mappings_copy: Path) -> AsyncIterator[Harness]:
    app = make_app(store, mappings_copy)
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, mappings_copy)
        yield harness
        await harness.aclose()


def _long_id(seed: int) -> str:
    rng = random.Random(seed)
    return "pp-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(9000))


def _person(doc_id: str, rev: str = "1-a", **fields: Any) -> dict[str, Any]:
    return {"doc": {"_id": doc_id, "_rev": rev, "type": "person", "name": "Long Record", "sex": "female",
                    "date_of_birth": "2022-01-01", "reported_date": 1715594400000, **fields}}


async def _post(gw: Harness, record: Any) -> dict[str, Any]:
    response = await gw.sender.post("/ingest/cht", content=json.dumps(record).encode(), headers=JSON)
    assert response.status_code in (200, 202), response.text[:300]  # 202: held in quarantine
    report: dict[str, Any] = response.json()
    return report


async def test_a_record_with_a_long_id_is_stored_edited_and_deleted(both: Harness) -> None:
    doc_id = _long_id(1)
    first = await _post(both, _person(doc_id))
    assert first["stored"] == 1, first
    patient = next(r for r in first["results"][0]["resources"] if r["type"] == "Patient")
    edited = await _post(both, _person(doc_id, rev="2-b", name="Long Record Edited"))
    assert edited["stored"] == 1, edited
    older = await _post(both, _person(doc_id, rev="1-a"))
    assert older["stale"] == 1, older  # its latest version is remembered under its id
    deleted = await _post(both, {"doc": {"_id": doc_id, "_rev": "3-c", "_deleted": True}})
    assert deleted["deleted"] == 1, deleted
    assert (await both.fhir.get(f"/fhir/Patient/{patient['id']}")).status_code == 410


async def test_a_record_with_a_long_id_that_fails_is_held(both: Harness) -> None:
    report = await _post(both, _person(_long_id(2), date_of_birth="not a date"))
    assert report["quarantined"] == 1, report
    again = await _post(both, _person(_long_id(2), date_of_birth="not a date"))
    assert again["quarantined"] == 1, again
    held = (await both.admin.get("/admin/quarantine", params={"source": "cht"})).json()
    assert len(held["items"]) == 1, held  # the same record sent again keeps one entry



async def test_a_record_id_of_256_four_byte_characters_is_taken_back_by_its_id(both: Harness) -> None:
    """The DELETE endpoint takes ids of up to 256 characters: 1 KB of UTF-8 in the widest ones,
    past what an index key holds as it is; it finds the record its ingest stored."""
    doc_id = "\U0001F600" * 256
    first = await _post(both, _person(doc_id))
    patient = next(r for r in first["results"][0]["resources"] if r["type"] == "Patient")
    response = await both.sender.delete(f"/ingest/cht/records/{doc_id}")
    assert response.status_code == 200, response.text[:300]
    assert (await both.fhir.get(f"/fhir/Patient/{patient['id']}")).status_code == 410


@pytest.mark.parametrize("record", [
    _person("nul\u0000id"),
    _person("esc\u001bid", date_of_birth="not a date"),
    {"doc": {"_id": "gone\u0000", "_rev": "2-x", "_deleted": True}},
])
async def test_a_record_whose_id_holds_a_control_character_is_held(both: Harness, record: dict[str, Any]) -> None:
    """PostgreSQL's text holds no NUL: such an id failed the request with a 500 (the record was
    not even quarantined), where SQLite stored it. An id is text a person can read: held, saying why."""
    report = await _post(both, record)
    assert report["quarantined"] == 1, report
    outcome = report["results"][0]["outcome"]["issue"][0]
    assert "control character" in outcome["diagnostics"], outcome
