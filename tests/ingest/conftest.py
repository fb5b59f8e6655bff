"""Ingest fixtures: an app with the ingest hook and routers, on a copy of the shipped mappings."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.api import admin_quarantine
from gateway.api import ingest as ingest_api
from gateway.api.app import create_app
from gateway.settings import Settings, SourceConfig
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SOURCES = [
    SourceConfig(name="commcare", kind="commcare", mapping="commcare"),
    SourceConfig(name="cht", kind="cht", mapping="cht"),
    SourceConfig(name="odk", kind="odk", mapping="odk"),
    SourceConfig(name="kobo", kind="kobo", mapping="kobo"),
    SourceConfig(name="csv", kind="csv", mapping="csv"),
    SourceConfig(name="cht-strict", kind="cht", mapping="cht", quarantine_status=422),
]


def sample(set_name: str, case: str) -> bytes:
    """A shipped golden input, as bytes."""
    folder = MAPPINGS / set_name / "tests"
    (path,) = [p for p in folder.iterdir() if p.name.startswith(f"{case}.input.")]
    return path.read_bytes()


@pytest.fixture
def mappings_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped mappings (tests may "fix" or break it)."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    return root


def make_app(store: Store, root: Path, **settings: Any) -> FastAPI:
    """The gateway app with ingest wired the way the lead wires it."""
    values: dict[str, Any] = {"rate_limit": MACHINE_SPEED_LIMITS, "sources": SOURCES, **settings}
    config = Settings(store_url="sqlite:///unused.db", mappings_dir=root, **values)
    app = create_app(config, store=store)
    app.include_router(ingest_api.router)
    app.include_router(admin_quarantine.router)
    return app


class Harness:
    """Clients of an in-process app: ``sender`` (ingest:*), ``admin`` and ``fhir`` (reads)."""

    def __init__(self, app: FastAPI, store: Store, root: Path) -> None:
        self.app = app
        self.store = store
        self.root = root
        self._clients: list[httpx.AsyncClient] = []
        self.sender = self.client("ingest:*")
        self.admin = self.client("admin")
        self.fhir = self.client("system/*.rs")

    def client(self, *scopes: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {make_token(self.store, scopes)}"} if scopes else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gateway.test",
            headers=headers,
        )
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
def ingest_store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store for the HTTP tests."""
    store = open_store(f"sqlite:///{tmp_path}/ingest.db")
    yield store
    store.close()


@pytest.fixture
async def gw(ingest_store: Store, mappings_copy: Path) -> AsyncIterator[Harness]:
    """The app running (lifespan entered), with clients."""
    app = make_app(ingest_store, mappings_copy, max_body_bytes=10 * 1024 * 1024)
    async with app.router.lifespan_context(app):
        harness = Harness(app, ingest_store, mappings_copy)
        yield harness
        await harness.aclose()
