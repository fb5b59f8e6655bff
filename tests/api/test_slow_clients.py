"""Clients that go away or dawdle mid-request: a client's failing is answered as the client's, never as ours."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import make_token

ADMIN = "admin-token-for-slow-client-tests-0123456789"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/slow.db")
    yield opened
    opened.close()


@pytest.fixture
async def app(tmp_path: Path, store: Store) -> AsyncIterator[FastAPI]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/slow.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        allowed_hosts=["gateway.test"], admin_token=ADMIN)
    built = create_app(settings, store=store)
    async with built.router.lifespan_context(built):
        yield built


async def _cut_off(app: FastAPI, method: str, path: str, headers: dict[str, str]) -> list[MutableMapping[str, Any]]:
    """Send the head and 5 of the 1000 body bytes announced, then the client's connection closes
    (``http.disconnect``, as uvicorn reports it); what the app sent back."""
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"re', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in {**headers, "host": "gateway.test",
                                                            "content-length": "1000"}.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": raw, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}
    await app(scope, receive, send)  # a crash would propagate here (uvicorn logs it with its stack)
    return sent


@pytest.mark.parametrize(("path", "media"), [
    ("/fhir/Patient", "application/fhir+json"),
    ("/fhir", "application/fhir+json"),
    ("/auth/token", "application/x-www-form-urlencoded"),
    ("/console/login", "application/x-www-form-urlencoded"),
])
async def test_a_client_that_hangs_up_mid_body_is_a_client_error_not_a_crash(
    app: FastAPI, store: Store, caplog: pytest.LogCaptureFixture, path: str, media: str
) -> None:
    """A CHW tablet losing its signal mid-upload, or anyone at all on the open endpoints: it was
    logged as an unhandled exception with its stack (twice, with uvicorn's), audited and counted
    as the gateway's failure (500)."""
    caplog.set_level(logging.INFO)
    token = make_token(store, ("system/*.cruds",))
    sent = await _cut_off(app, "POST", path, {"authorization": f"Bearer {token}", "content-type": media})
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
