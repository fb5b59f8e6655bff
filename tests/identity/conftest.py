"""Identity fixtures: the ingest app with matching on, on both store backends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.store import Store
from tests.ingest.conftest import MAPPINGS, Harness, make_app, sample


def cht_person(**changes: Any) -> bytes:
    """The shipped CHT person sample with ``doc`` fields changed."""
    record = json.loads(sample("cht", "person-patient"))
    record["doc"].update(changes)
    return json.dumps(record).encode()


def commcare_case(**changes: Any) -> bytes:
    """The shipped CommCare TB patient case with case properties changed."""
    record = json.loads(sample("commcare", "tb-patient-case"))
    record["properties"].update(changes)
    return json.dumps(record).encode()


@pytest.fixture
async def gw(store: Store) -> AsyncIterator[Harness]:
    """The ingest app with identity matching enabled (shipped rule file), on either backend."""
    app = make_app(store, MAPPINGS, identity={"enabled": True})
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, MAPPINGS)
        yield harness
        await harness.aclose()
