"""Fixtures for the OpenMRS destination tests: the FHIR2 stand-in over HTTP, the gateway on both stores
and a delivery service on both queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.service import DeliveryService
from gateway.settings import Settings, SourceConfig
from openmrs_sandbox import BASE, OpenMrs, create_app, reference_site
from tests.conftest import ApiHarness
from tests.delivery.conftest import REDIS_URL, redis_prefix  # noqa: F401 (a fixture)
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
PASSWORD = "Admin123"
FAST = DeliverySettings(
    retry=RetryPolicy(initial_delay=0.01, multiplier=2, max_delay=0.05, jitter=0.1, max_age=3600),
    breaker=BreakerPolicy(min_calls=1000, probe_interval=0.05),
    poll_interval=0.02,
    lease=30,
    drain_timeout=2,
)


class Emr:
    """The stand-in's state and its base URL."""

    def __init__(self, state: OpenMrs, url: str) -> None:
        self.state = state
        self.url = url

    @property
    def fhir_base(self) -> str:
        """The FHIR2 module's base URL."""
        return self.url + BASE


@pytest.fixture
def emr() -> Iterator[Emr]:
    """A fresh OpenMRS stand-in (reference-application site; Task upsert enabled) on a loopback port."""
    state = OpenMrs(reference_site())
    with LiveServer(create_app(state)) as server:
        yield Emr(state, server.url)


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The gateway on each store backend, ingesting CHT pushes with the shipped mappings."""
    return Settings(
        store_url=store_url,
        allowed_hosts=["gateway.test"],
        rate_limit=MACHINE_SPEED_LIMITS,
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
        mappings_dir=MAPPINGS,
    )


def destination(emr: Emr, **options: Any) -> DestinationConfig:
    """An OpenMRS destination for the CHT referral flow."""
    return DestinationConfig.model_validate({
        "name": "openmrs",
        "kind": "fhir",
        "base_url": emr.fhir_base,
        "timeout": 10,
        "auth": {"type": "basic", "username": "admin", "secret_env": "OPENMRS_PASSWORD"},
        "filter": {"resource_types": ["Patient", "Encounter", "ServiceRequest", "Task"]},
        "options": {"profile": "openmrs", "conceptmaps": str(MAPPINGS / "openmrs" / "conceptmaps"), **options},
    })  # fmt: skip


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A delivery queue of each backend."""
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL


@pytest.fixture
async def service_for(api: ApiHarness, queue_url: str, redis_prefix: str) -> AsyncIterator[Any]:  # noqa: F811
    """Builds delivery services (default connector factories: the store keeps OpenMRS ids); stops them after."""
    services: list[DeliveryService] = []

    def make(dest: DestinationConfig) -> DeliveryService:
        service = DeliveryService.create(
            store=api.store,
            queue_url=queue_url,
            queue_prefix=redis_prefix,
            destinations=[dest],
            settings=FAST,
            environ={"OPENMRS_PASSWORD": PASSWORD},
        )
        services.append(service)
        return service

    yield make
    for service in services:
        if service._running:
            await service.stop()
