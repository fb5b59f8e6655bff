"""Shared fixtures: stores on both backends, an app with authenticated clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.settings import Settings
from gateway.store import ApiClient, ClientRegistry, Store, open_store
from gateway.store.postgres import PostgresStore
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.watchdog import Watchdog

# The machine's PostgreSQL (scripts/services.sh makes sure it runs); tests never skip it.
PG_URL = os.environ.get("GATEWAY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    """A stuck test stops the run and shows where it waits (``tests.support.watchdog``)."""
    config.pluginmanager.register(Watchdog(config), "gateway-watchdog")


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL store URL with a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_store(pg_schema_url: str) -> Iterator[PostgresStore]:
    """An open, migrated PostgreSQL store on a fresh schema (for what only PostgreSQL has)."""
    opened = PostgresStore(pg_schema_url)
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL for each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated store on each backend."""
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """An open SQLite store."""
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    yield opened
    opened.close()


def make_token(store: ClientRegistry, scopes: tuple[str, ...], name: str | None = None) -> str:
    """Register a client with these scopes and return its bearer token."""
    token = new_token()
    client = ApiClient(name or f"c-{uuid.uuid4().hex[:8]}", scopes, datetime.now(UTC))
    store.save_client(client, hash_token(token))
    return token


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an app on a temporary SQLite store, reached as ``http://gateway.test``."""
    return Settings(store_url=f"sqlite:///{tmp_path}/api.db", allowed_hosts=["gateway.test"],
                    rate_limit=MACHINE_SPEED_LIMITS)


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiHarness]:
    """The app in-process, with a client factory for tokens of chosen scopes."""
    store = open_store(settings.store_url)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()
    store.close()


class ApiHarness:
    """Clients for one in-process app."""

    def __init__(self, app: object, store: Store) -> None:
        self.app = app
        self.store = store
        self._clients: list[httpx.AsyncClient] = []
        self.client = self.with_scopes("system/*.cruds")

    def with_scopes(self, *scopes: str, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client for the app whose token holds ``scopes``."""
        token = token or make_token(self.store, tuple(scopes))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {token}"},
        )
        self._clients.append(client)
        return client

    def anonymous(self) -> httpx.AsyncClient:
        """An HTTP client without credentials."""
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
                                   base_url="http://gateway.test")
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
