"""The app records when each client last authenticated, off the request path (issue 11)."""

from __future__ import annotations

from pathlib import Path

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import open_store
from tests.conftest import ApiHarness, make_token


async def test_last_use_reaches_the_store_by_shutdown_at_the_latest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    app = create_app(Settings(store_url=url), store=store)
    async with app.router.lifespan_context(app):
        api = ApiHarness(app, store)
        emr = api.with_scopes(token=make_token(store, ("system/Patient.rs",), name="emr"))
        assert (await emr.get("/fhir/Patient")).status_code == 200
        await api.aclose()
    (client,) = [c for c in store.list_clients() if c.name == "emr"]
    assert client.last_used is not None
    store.close()
