"""The gateway on a loopback port and an httpx client with the response oracles installed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fhir_responses import oracle_hook
from tests.support.gateway_app import build_gateway
from tests.support.live_server import LiveServer


@dataclass(frozen=True, slots=True)
class Served:
    """A running gateway: its FHIR base URL and a token allowed everything."""

    base: str
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    gateway = build_gateway(Path(tmp_path_factory.mktemp("conformance")))
    with LiveServer(gateway.app) as server:
        yield Served(base=f"{server.url}/fhir", token=gateway.token)


@pytest.fixture
def fhir(served: Served) -> Iterator[httpx.Client]:
    """A client for ``[base]``: every response must pass the oracles (OO on errors, schema-valid)."""
    with httpx.Client(
        base_url=served.base,
        headers={"Authorization": f"Bearer {served.token}", "Accept": "application/fhir+json"},
        event_hooks={"response": [oracle_hook()]},
        timeout=30,
    ) as client:
        yield client
