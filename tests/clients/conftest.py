"""A real gateway on a loopback port, shared by the real-client tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.gateway_app import build_gateway
from tests.support.live_server import LiveServer


@dataclass(frozen=True, slots=True)
class LiveGateway:
    """Where the gateway listens and a token allowed everything."""

    base: str  # FHIR base URL, no trailing slash
    token: str


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    gateway = build_gateway(Path(tmp_path_factory.mktemp("clients")))
    with LiveServer(gateway.app) as server:
        yield LiveGateway(base=f"{server.url}/fhir", token=gateway.token)
