"""Clients that go away or dawdle mid-request: a client's failing is answered as the client's, never as ours."""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.cli.server import GatewayConfig
from gateway.settings import ClientTimeoutSettings, Settings
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.support.live_server import LiveServer

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


# Slow clients (slowloris): `gateway serve` bounds how long a request may take to arrive.

LIMITS = ClientTimeoutSettings(head_seconds=1.0, body_seconds=1.0, body_min_rate=1000)
#: Long enough for any deadline above to pass, short of what "waits forever" would take.
PATIENCE = 6.0


@pytest.fixture
def served(tmp_path: Path, store: Store) -> Iterator[tuple[LiveServer, str]]:
    """`gateway serve`'s uvicorn configuration (GatewayConfig) with second-long deadlines, and a token."""
    settings = Settings(store_url=f"sqlite:///{tmp_path}/slow.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        client_timeouts=LIMITS)
    token = make_token(store, ("system/*.cruds",))
    with LiveServer(create_app(settings, store=store), config_type=GatewayConfig, client_timeouts=LIMITS) as server:
        yield server, token


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=PATIENCE)
    return sock


def _trickle_until_closed(sock: socket.socket, pieces: Iterator[bytes], every: float) -> tuple[bytes, float]:
    """Send a piece every ``every`` seconds until the server closes the connection (or PATIENCE
    passes: an AssertionError); everything it answered and the seconds it took."""
    started = time.monotonic()
    answer = b""
    sock.setblocking(False)
    while time.monotonic() - started < PATIENCE:
        ready, _, _ = select.select([sock], [], [], every)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return answer, time.monotonic() - started
            answer += chunk
            continue
        piece = next(pieces, None)
        if piece is not None:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                continue
    raise AssertionError(f"the connection was still open after {PATIENCE} s; answered {answer[:200]!r}")


def _forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def _head(token: str | None, length: int, path: str = "/fhir/Patient") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/fhir+json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_a_connection_that_never_sends_a_request_is_closed(served: tuple[LiveServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        answer, took = _trickle_until_closed(sock, iter(()), 0.1)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    outcome = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "timeout"
    assert took < LIMITS.head_seconds + 2


def test_a_request_head_trickled_a_header_at_a_time_is_408_and_closed(served: tuple[LiveServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer, took = _trickle_until_closed(sock, _forever(b"X-Pad: 1\r\n"), 0.2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert took < LIMITS.head_seconds + 2


@pytest.mark.parametrize("authenticated", [True, False])
def test_a_body_trickled_a_byte_at_a_time_is_408_and_closed(
    served: tuple[LiveServer, str], authenticated: bool
) -> None:
    """With a token the app waits for the body (it gets 408); without one it answered 401 at once,
    and the rest of the announced body is not waited for either."""
    server, token = served
    with _connect(server) as sock:
        sock.sendall(_head(token if authenticated else None, 100_000) + b"{")
        answer, took = _trickle_until_closed(sock, _forever(b" "), 0.2)
    expected = b"HTTP/1.1 408 " if authenticated else b"HTTP/1.1 401 "
    assert answer.startswith(expected), answer
    assert took < LIMITS.body_seconds + 2


def test_a_slow_but_steady_upload_and_a_kept_alive_connection_are_served(served: tuple[LiveServer, str]) -> None:
    """A body that keeps above body_min_rate gets the time it needs (here about 2.5 s, past
    body_seconds), and the next request on the connection is answered too."""
    server, token = served
    body = json.dumps({"resourceType": "Patient", "gender": "female",
                       "name": [{"family": "Steady", "given": ["Upload"] * 200}]}).encode()
    assert len(body) > 2000
    with _connect(server) as sock:
        sock.sendall(_head(token, len(body)))
        started = time.monotonic()
        for at in range(0, len(body), 250):
            time.sleep(0.12)  # ~2,000 bytes a second
            sock.sendall(body[at:at + 250])
        assert time.monotonic() - started > LIMITS.body_seconds
        first = _read_answer(sock)
        assert first.startswith(b"HTTP/1.1 201 "), first[:300]
        sock.sendall(b"GET /fhir/Patient?family=Steady HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Bearer {token}\r\n\r\n".encode())
        second = _read_answer(sock)
        assert second.startswith(b"HTTP/1.1 200 ") and b'"total":1' in second, second[:300]


def _read_answer(sock: socket.socket) -> bytes:
    """One whole response (by its Content-Length)."""
    sock.settimeout(PATIENCE)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return head + b"\r\n\r\n" + rest
