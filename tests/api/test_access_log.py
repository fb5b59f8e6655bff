"""The access log: one JSON line per request with its id, never query values, tokens or bodies."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.api import configure_access_log
from gateway.api.access_log import ACCESS_LOGGER
from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store, StoreUnavailable, open_store
from tests.conftest import make_token
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Wanjiku-Otieno-1987"  # stands for patient data a client might put in a query or a body


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/log.db")
    yield opened
    opened.close()


async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app(tmp_path: Path, store: Store) -> AsyncIterator[FastAPI]:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/log.db", allowed_hosts=["gateway.test"])
    built = create_app(settings, store=store)
    async with built.router.lifespan_context(built):
        yield built


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Any:
    """The access log lines written so far, parsed."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    def parsed() -> list[dict[str, Any]]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]

    return parsed


def client_for(app: FastAPI, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", headers=headers)


async def test_one_line_per_request_with_its_id_echoed(app: FastAPI, store: Store, lines: Any) -> None:
    token = make_token(store, ("system/*.cruds",), name="emr")
    async with client_for(app, token) as emr:
        created = await emr.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
        pid = created.json()["id"]
        read = await emr.get(f"/fhir/Patient/{pid}")
        mine = await emr.get("/fhir/Patient", headers={"X-Request-ID": "partner-run.42_a"})
    got = lines()
    assert len(got) == 3
    assert [line["request_id"] for line in got] == [
        created.headers["x-request-id"], read.headers["x-request-id"], "partner-run.42_a"
    ]
    assert mine.headers["x-request-id"] == "partner-run.42_a"
    assert re.fullmatch(r"[0-9a-f]{32}", read.headers["x-request-id"])
    assert created.headers["x-request-id"] != read.headers["x-request-id"]
    line = got[1]
    assert set(line) == {"time", "request_id", "method", "route", "type", "status", "duration_ms", "bytes",
                         "client", "ip"}
    assert line["method"] == "GET" and line["route"] == "/fhir/{rtype}/{rid}" and line["type"] == "Patient"
    assert line["status"] == 200 and line["bytes"] == len(read.content) and line["client"] == "emr"
    assert line["ip"] == "127.0.0.1" and 0 < line["duration_ms"] < 10_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert pid not in json.dumps(got)  # a route template, not the path
    assert got[0]["route"] == "/fhir/{rtype}" and got[0]["method"] == "POST" and got[0]["status"] == 201


@pytest.mark.parametrize("sent", ["", "has space", "x" * 65, "semi;colon", "ünï"])
async def test_an_unusable_request_id_is_replaced(app: FastAPI, lines: Any, sent: str) -> None:
    async with client_for(app) as anonymous:
        response = await anonymous.get("/healthz", headers={b"X-Request-ID": sent.encode("utf-8")})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert lines()[0]["request_id"] == response.headers["x-request-id"]
    assert lines()[0]["client"] is None and lines()[0]["route"] == "/healthz"


async def test_no_query_values_tokens_or_bodies_reach_the_log(
    app: FastAPI, store: Store, caplog: pytest.LogCaptureFixture, lines: Any
) -> None:
    caplog.set_level(logging.DEBUG)  # every gateway logger, not only the access log
    token = make_token(store, ("system/*.cruds",), name="emr")
    async with client_for(app, token) as emr, client_for(app, f"{token}x") as forged:
        await emr.get("/fhir/Patient", params={"name": SECRET, "_count": "5"})
        await emr.get(f"/fhir/Patient?family={SECRET}&{SECRET}=1")
        await emr.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": SECRET}]})
        await emr.post("/fhir/Patient/_search", content=f"name={SECRET}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        await emr.get(f"/fhir/{SECRET}/1")  # not a resource type: the type field stays empty
        await emr.get(f"/nowhere/{SECRET}")
        await forged.get("/fhir/Patient", params={"name": SECRET})
    assert len(lines()) == 7
    server_side = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert SECRET not in server_side and token not in server_side
    assert [line["type"] for line in lines()][-3:] == [None, None, "Patient"]
    assert [line["route"] for line in lines()][-3:] == ["/fhir/{rtype}/{rid}", None, "/fhir/{rtype}"]
    assert lines()[-1]["status"] == 401 and lines()[-1]["client"] is None


async def test_a_500_names_the_request_id_in_the_outcome_the_header_and_the_log(
    app: FastAPI, store: Store, caplog: pytest.LogCaptureFixture, lines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_token(store, ("system/*.cruds",), name="emr")

    def broken(*args: object) -> None:
        raise RuntimeError(f"driver detail {SECRET}")

    monkeypatch.setattr(app.state.ctx.store, "read", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test",
                                 headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-500"}) as emr:
        response = await emr.get(f"/fhir/Patient/{SECRET}")  # an id may be whatever the source's record id was
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "trace-500"
    assert "request id trace-500" in response.json()["issue"][0]["diagnostics"]
    assert lines()[-1]["status"] == 500 and lines()[-1]["request_id"] == "trace-500"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "gateway.api"]
    assert len(errors) == 1 and "request id trace-500" in errors[0] and SECRET not in errors[0]
    assert "GET /fhir/{rtype}/{rid}" in errors[0]  # the route, as the access log names it


async def test_a_503_logs_the_route_not_the_path_as_sent(
    app: FastAPI, store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path as sent can hold a source's record id, or (percent-encoded) a CR LF that forges a log line.
    token = make_token(store, ("system/*.cruds",), name="emr")

    def down(*args: object) -> None:
        raise StoreUnavailable("the store cannot be reached")

    monkeypatch.setattr(app.state.ctx.store, "read", down)
    async with client_for(app, token) as emr:
        response = await emr.get(f"/fhir/Patient/{SECRET}")
    assert response.status_code == 503
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "gateway.api"]
    assert "GET /fhir/{rtype}/{rid}" in warning and SECRET not in warning


async def test_a_429_is_logged_with_the_client(tmp_path: Path, store: Store, lines: Any) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/log.db", rate_limit={"burst": 1, "requests_per_second": 0.01})
    token = make_token(store, ("system/*.cruds",), name="emr")
    async for app in running(create_app(settings, store=store)):
        async with client_for(app, token) as emr:
            await emr.get("/fhir/Patient")
            refused = await emr.get("/fhir/Patient")
    assert refused.status_code == 429
    last = lines()[-1]
    assert last["status"] == 429 and last["client"] == "emr" and last["request_id"] == refused.headers["x-request-id"]


async def test_access_log_off_writes_no_lines_but_keeps_request_ids(
    tmp_path: Path, store: Store, lines: Any
) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/log.db", access_log=False)
    async for app in running(create_app(settings, store=store)):
        async with client_for(app) as anonymous:
            response = await anonymous.get("/healthz")
    assert lines() == [] and response.headers["x-request-id"]


def test_configured_lines_are_bare_json_and_other_loggers_keep_their_format() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    root_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(root_handler)
    stream = io.StringIO()
    try:
        configure_access_log(stream)
        logger.info('{"status":200}')
        logging.getLogger("gateway.api").warning("something else")
    finally:
        logging.getLogger().removeHandler(root_handler)
        logger.handlers[:], logger.level, logger.propagate = saved
    assert stream.getvalue() == '{"status":200}\n'
    assert root_stream.getvalue() == "WARNING gateway.api: something else\n"


def test_gateway_serve_writes_json_lines_to_stderr_once_each(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path}/serve.db",
           "GATEWAY_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db", "GATEWAY_PORT": str(port)}
    env.pop("GATEWAY_CONFIG", None)
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz?probe={SECRET}",
                                     headers={"X-Request-ID": "serve-1"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "gateway serve did not start"
                time.sleep(0.2)
        assert response.headers["x-request-id"] == "serve-1"
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [line["request_id"] for line in access] == ["serve-1"]  # once: uvicorn's own access log is off
    assert access[0]["route"] == "/healthz" and access[0]["status"] == 200
    assert SECRET not in stderr
    # Every other line has the "UTC time LEVEL name: message" format, uvicorn's included.
    others = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    assert others and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+: ", line)
                          for line in others), others


def test_the_time_is_utc_to_the_millisecond() -> None:
    from datetime import UTC, datetime

    from gateway.api.access_log import _utc_stamp

    for when in (1_764_884_117.135, 1_764_884_117.999, 1_764_884_118.0005, 1_764_884_118.25):
        expected = datetime.fromtimestamp(when, UTC)
        got = datetime.fromisoformat(_utc_stamp(when).replace("Z", "+00:00"))
        assert abs((got - expected).total_seconds()) < 0.001 and got.tzinfo == UTC
    assert _utc_stamp(1_764_884_118.25) == "2025-12-04T21:35:18.250Z"


async def test_every_route_the_gateway_serves_names_its_template(app: FastAPI, store: Store, lines: Any) -> None:
    """Not only the FHIR API's generic routes: Subscription, $export, SMART discovery and the console too.

    ``route`` is ``null`` only for a path no route matched (README, access log).
    """
    token = make_token(store, ("system/*.cruds",), name="emr")
    async with client_for(app, token) as emr:
        searched = await emr.get("/fhir/Subscription")
        topic = await emr.get("/fhir/Basic/topic-referral")
        kicked = await emr.get("/fhir/$export", params={"_type": "Patient"}, headers={"Prefer": "respond-async"})
        smart = await emr.get("/fhir/.well-known/smart-configuration")
        login = await emr.get("/console/login")
    assert [searched.status_code, topic.status_code, kicked.status_code, smart.status_code, login.status_code] == [
        200, 200, 202, 200, 200
    ]
    assert [line["route"] for line in lines()] == [
        "/fhir/Subscription", "/fhir/Basic/topic-{name}", "/fhir/$export", "/fhir/.well-known/smart-configuration",
        "/console/login",
    ]
