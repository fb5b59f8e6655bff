"""A gateway with the operator console, the bundled CHT mappings and a FHIR destination that refuses on cue.

The destination (``tests.delivery.destination.LoopbackFhirServer``) answers 422 for every
resource whose reference is in ``ConsoleGateway.refused``, so a test can make a dead letter,
"fix" the destination, and replay it through the console.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.delivery import DeliverySections
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.ingest import SourceConfig
from gateway.services import ServicePlan
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.delivery.destination import LoopbackFhirServer, Request

REPO = Path(__file__).resolve().parents[2]
PATIENT_RECORD = REPO / "mappings" / "cht" / "tests" / "person-patient.input.json"
PATIENT_ID_IN_RECORD = "f6a5b4c3-d2e1-4f0a-9b8c-7d6e5f4a3b2c"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a console page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


class ConsoleGateway:
    """The app, its store, the destination, and tokens for an admin and a sender."""

    def __init__(self, tmp_path: Path) -> None:
        self.refused: set[str] = set()
        self.server = LoopbackFhirServer(plan=self._plan)
        self.settings = Settings(
            store_url=f"sqlite:///{tmp_path}/store.db",
            queue_url=f"sqlite:///{tmp_path}/queue.db",
            allowed_hosts=["gateway.test", "127.0.0.1"],
            mappings_dir=REPO / "mappings",
            sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
            audit={"flush_seconds": 0.05},
            message_log={"flush_seconds": 0.05},
        )
        self.store: Store = open_store(self.settings.store_url)
        self.admin_token = make_token(self.store, ("admin",), name="ops")
        self.reader_token = make_token(self.store, ("system/*.rs",), name="reader")
        self.sender_token = make_token(self.store, ("ingest:cht",), name="cht-sender")

    def _plan(self, index: int, request: Request) -> str:
        return "422" if request.ref in self.refused else "ok"

    def sections(self) -> DeliverySections:
        """One FHIR destination, retried quickly."""
        return DeliverySections(
            destinations=(DestinationConfig(name="shr", kind="fhir", base_url=self.server.url, timeout=2),),
            delivery=DeliverySettings(retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, max_age=3600),
                                      poll_interval=0.02),
        )

    @contextmanager
    def running(self) -> Iterator[None]:
        """The destination server, for the duration of the block."""
        self.server.start()
        try:
            yield
        finally:
            self.server.stop()
            self.store.close()

    def app(self) -> FastAPI:
        """The gateway app with in-process delivery to the destination."""
        return create_app(self.settings, store=self.store,
                          plan=ServicePlan(delivery=True, run_worker=True, sections=self.sections()))


def console_client(app: object, base_url: str = "http://gateway.test") -> httpx.AsyncClient:
    """An HTTP client for the app with no credentials (it keeps the console's cookie)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                             base_url=base_url, follow_redirects=False)


async def log_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """Log in through the form, as a browser does."""
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"token": token, "csrf": csrf_of(form.text),
                                                      "next": "/console"})
