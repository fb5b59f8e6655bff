"""Gateways on loopback for the robustness tests: SQLite always, PostgreSQL where a test asks for it.

Hypothesis runs a test body many times inside one pytest test, so every fixture a
property test uses is module-scoped (function-scoped fixtures would be shared across
examples anyway, and Hypothesis refuses them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_URL
from tests.robustness.http import Gateway, serve


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway on a fresh SQLite store for the whole module."""
    directory = Path(tmp_path_factory.mktemp("robustness"))
    with serve(directory, f"sqlite:///{directory / 'gateway.db'}") as served:
        yield served


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped after the module."""
    schema = f"rb_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway on each backend (one per module and backend)."""
    directory = Path(tmp_path_factory.mktemp(f"robustness-{request.param}"))
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'gateway.db'}"
    else:
        url = request.getfixturevalue("module_pg_url")
    with serve(directory, url) as served:
        yield served
