"""Fixtures for the DHIS2 sandbox tests: apps, clients and demo-metadata payload builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import (
    DEFAULT_TOKEN,
    FaultConfig,
    SandboxServer,
    SandboxSettings,
    create_sandbox_app,
)
from dhis2_sandbox.catalog import Catalog, load_catalog

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


class Demo:
    """UIDs of the bundled demo metadata by code, and payload builders using them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def uid(self, collection: str, code: str) -> str:
        return str(next(obj["id"] for obj in self.catalog.collections[collection] if obj.get("code") == code))

    def ou(self, code: str) -> str:
        return self.uid("organisationUnits", code)

    def de(self, code: str) -> str:
        return self.uid("dataElements", code)

    def tea(self, code: str) -> str:
        return self.uid("trackedEntityAttributes", code)

    def coc(self, code: str) -> str:
        return self.uid("categoryOptionCombos", code)

    @property
    def person(self) -> str:
        return self.uid("trackedEntityTypes", "PERSON")

    @property
    def program(self) -> str:
        return self.uid("programs", "CHW_HH_VISIT")

    @property
    def visit_stage(self) -> str:
        return self.uid("programStages", "CHW_HH_VISIT_STAGE")

    @property
    def registration_stage(self) -> str:
        return self.uid("programStages", "CHW_HH_REGISTRATION")

    @property
    def data_set(self) -> str:
        return self.uid("dataSets", "CHW_MONTHLY")

    def tracked_entity(
        self, uid: str, client_id: str = "C-1", ou: str = "CU_KISIWA", **extra: Any
    ) -> dict[str, Any]:
        attributes = [
            {"attribute": self.tea("CHW_CLIENT_ID"), "value": client_id},
            {"attribute": self.tea("SEX"), "value": "FEMALE"},
            {"attribute": self.tea("FIRST_NAME"), "value": "Amina"},
        ]
        return {
            "trackedEntity": uid,
            "trackedEntityType": self.person,
            "orgUnit": self.ou(ou),
            "attributes": attributes,
            **extra,
        }

    def program_attributes(self, client_id: str = "C-1") -> list[dict[str, Any]]:
        """The household-visit program's mandatory attributes, as an enrollment repeats them."""
        return [
            {"attribute": self.tea("CHW_CLIENT_ID"), "value": client_id},
            {"attribute": self.tea("SEX"), "value": "FEMALE"},
        ]

    def enrollment(
        self, uid: str, te: str, ou: str = "CU_KISIWA", client_id: str = "C-1", **extra: Any
    ) -> dict[str, Any]:
        # DHIS2 checks mandatory program attributes against the enrollment and the tracked entity
        # stored before the import (E1018), so an enrollment of a new person carries them.
        return {
            "enrollment": uid,
            "trackedEntity": te,
            "program": self.program,
            "orgUnit": self.ou(ou),
            "enrolledAt": "2024-05-01",
            "occurredAt": "2024-05-01",
            "attributes": self.program_attributes(client_id),
            **extra,
        }

    def event(self, uid: str, enrollment: str, ou: str = "CU_KISIWA", **extra: Any) -> dict[str, Any]:
        values = [
            {"dataElement": self.de("CHW_VISIT_TYPE"), "value": "ROUTINE"},
            {"dataElement": self.de("CHW_MUAC_CM"), "value": "11.2"},
            {"dataElement": self.de("CHW_RDT_RESULT"), "value": "POSITIVE"},
        ]
        return {
            "event": uid,
            "enrollment": enrollment,
            "program": self.program,
            "programStage": self.visit_stage,
            "orgUnit": self.ou(ou),
            "occurredAt": "2024-05-02T10:00:00.000",
            "status": "COMPLETED",
            "dataValues": values,
            **extra,
        }

    def bundle(self, n: int = 1, prefix: str = "A") -> dict[str, Any]:
        """``n`` tracked entities, each with one enrollment and one visit event."""
        tes, ens, evs = [], [], []
        for i in range(n):
            te, en, ev = f"{prefix}te{i:08d}", f"{prefix}en{i:08d}", f"{prefix}ev{i:08d}"
            tes.append(self.tracked_entity(te, client_id=f"{prefix}-{i}"))
            ens.append(self.enrollment(en, te, client_id=f"{prefix}-{i}"))
            evs.append(self.event(ev, en))
        return {"trackedEntities": tes, "enrollments": ens, "events": evs}


@pytest.fixture(scope="session")
def demo() -> Demo:
    return Demo(load_catalog())


AppFactory = Callable[..., Any]


@pytest.fixture
def make_app() -> AppFactory:
    def factory(
        version: str = "2.41.0", faults: FaultConfig | None = None, state: Path | None = None, **settings: Any
    ) -> Any:
        return create_sandbox_app(state, faults, SandboxSettings(version=version, **settings))

    return factory


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(make_app: AppFactory) -> AsyncIterator[ClientFactory]:
    clients: list[httpx.AsyncClient] = []

    def factory(app: Any = None, *, auth: dict[str, str] | None = None, **app_args: Any) -> httpx.AsyncClient:
        app = app if app is not None else make_app(**app_args)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://sandbox.test",
            headers=AUTH if auth is None else auth,
        )
        setattr(client, "app", app)  # noqa: B010 - lets a test reach the app behind the client
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client()


@pytest.fixture
def served(make_app: AppFactory) -> Iterator[Callable[..., SandboxServer]]:
    servers: list[SandboxServer] = []

    def factory(app: Any = None, **app_args: Any) -> SandboxServer:
        server = SandboxServer(app if app is not None else make_app(**app_args)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
