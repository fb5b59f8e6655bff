"""The console's identity review page: pairs with the evidence per field, accept and reject."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.settings import IdentitySettings
from tests.console.harness import ConsoleGateway, log_in
from tests.console.test_pages import Harness
from tests.identity.conftest import cht_person
from tests.identity.test_golden_http import OTHER_TWIN, TWIN


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    gateway = ConsoleGateway(tmp_path)
    gateway.settings = gateway.settings.model_copy(update={"identity": IdentitySettings(enabled=True)})
    with gateway.running():
        app = gateway.app()
        async with app.router.lifespan_context(app):
            harness = Harness(gateway, app)
            answer = await log_in(harness.console, gateway.admin_token)
            assert answer.status_code == 303
            yield harness
            await harness.aclose()


async def test_review_page_lists_the_evidence_and_decides(harness: Harness) -> None:
    for twin in (TWIN, OTHER_TWIN):
        assert (await harness.ingest({"doc": json.loads(cht_person(**twin))["doc"]})).status_code == 200
    listing = (await harness.console.get("/console/identity/reviews")).text
    assert "Aisha" in listing and "Amina" in listing and "different" in listing and "Same person" in listing
    task = listing.split('id="pair-', 1)[1].split('"', 1)[0]
    accepted = await harness.post(f"/console/identity/reviews/{task}/accept")
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("notice=identity-accept")
    assert "No pending pairs" in (await harness.console.get("/console/identity/reviews")).text
    again = await harness.post(f"/console/identity/reviews/{task}/accept")
    assert again.status_code == 409
    rejected = await harness.post(f"/console/identity/reviews/{task}/reject")
    assert rejected.status_code == 303
    assert "Same person" in (await harness.console.get("/console/identity/reviews?status=rejected")).text
    assert (await harness.console.get("/console/identity/reviews/x/merge")).status_code in (404, 405)


async def test_the_nav_names_the_identity_page_only_when_identity_is_on(harness: Harness, tmp_path: Path) -> None:
    assert 'href="/console/identity/reviews"' in (await harness.console.get("/console")).text
    off = ConsoleGateway(tmp_path / "off")  # identity.enabled is false by default
    with off.running():
        app = off.app()
        async with app.router.lifespan_context(app):
            other = Harness(off, app)
            assert (await log_in(other.console, off.admin_token)).status_code == 303
            overview = await other.console.get("/console")
            assert overview.status_code == 200 and "/console/identity/reviews" not in overview.text
            await other.aclose()
