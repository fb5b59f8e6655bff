"""SIGHUP to a running ``gateway serve`` reloads its sources and mapping sets in place: a source added
to the file ingests, a broken file is refused (logged with file:line) and the process keeps serving;
under ``--workers`` every worker process reloads and none is restarted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.gateway_app import register_client
from tests.support.processes import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "mappings" / "odk" / "tests" / "household-visit-expanded.input.json").read_bytes()
CHT = {"name": "cht", "kind": "cht", "mapping": "cht"}
ODK = {"name": "odk", "kind": "odk", "mapping": "odk"}


def _configure(tmp_path: Path, store_url: str, sources: list[dict[str, Any]]) -> Path:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"store_url": store_url, "queue_url": f"sqlite:///{tmp_path}/queue.db",
                                      "mappings_dir": str(tmp_path / "mappings"), "sources": sources}))  # fmt: skip
    return config


def _start(tmp_path: Path, config: Path, *args: str) -> tuple[subprocess.Popen[str], str, Path]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(port)}
    env.pop("GATEWAY_CONFIG", None)
    log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), *args],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                              text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server)
    except AssertionError as exc:
        server.kill()  # a server that never answered must not outlive the test
        server.wait(timeout=30)
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
    return server, base, log


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _ingest_odk(base: str, token: str) -> int:
    """One request on its own connection (so, under --workers, any worker may take it)."""
    response = httpx.post(f"{base}/ingest/odk", content=SAMPLE, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return response.status_code


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)


def _children(pid: int) -> set[str]:
    return set(subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split())


def test_sighup_reloads_the_sources_and_refuses_a_broken_file(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    store_url = f"sqlite:///{tmp_path}/store.db"
    config = _configure(tmp_path, store_url, [CHT])
    token = register_client(store_url, "sender", ("ingest:*",))
    server, base, log = _start(tmp_path, config)
    try:
        assert _ingest_odk(base, token) == 404
        _configure(tmp_path, store_url, [CHT, ODK])
        server.send_signal(signal.SIGHUP)
        _eventually(lambda: _ingest_odk(base, token) == 200, "the source added to the file is served")
        assert "reload (SIGHUP) applied: 2 source(s)" in log.read_text()

        config.write_text(config.read_text() + "sources: [\n")
        server.send_signal(signal.SIGHUP)
        _eventually(lambda: "reload (SIGHUP) refused" in log.read_text(), "the refusal is logged")
        assert f"{config}:" in log.read_text().split("reload (SIGHUP) refused", 1)[1]
        assert server.poll() is None
        assert _ingest_odk(base, token) == 200  # the previous configuration keeps serving
    finally:
        _stop(server)
    assert server.returncode == 0


def test_sighup_under_workers_reloads_every_worker_without_restarting_them(
    tmp_path: Path, pg_schema_url: str
) -> None:
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    config = _configure(tmp_path, pg_schema_url, [CHT])
    token = register_client(pg_schema_url, "sender", ("ingest:*",))
    server, base, log = _start(tmp_path, config, "--workers", "2")
    try:
        workers = _children(server.pid)
        assert len(workers) >= 2
        _configure(tmp_path, pg_schema_url, [CHT, ODK])
        server.send_signal(signal.SIGHUP)
        _eventually(lambda: log.read_text().count("reload (SIGHUP) applied") == 2, "both workers reload", timeout=90.0)
        assert _children(server.pid) == workers  # reloaded in place, not restarted
        assert all(_ingest_odk(base, token) == 200 for _ in range(10))
    finally:
        _stop(server)
    assert server.returncode == 0


def test_sighup_to_gateway_worker_reschedules_its_pulled_sources(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    store_url = f"sqlite:///{tmp_path}/store.db"

    def pulled(name: str) -> dict[str, Any]:  # nobody listens there: each pull fails, logged, and waits an hour
        return {"name": name, "kind": "odk-central", "mapping": "odk", "pull": {
            "base_url": "http://127.0.0.1:9", "project": 1, "form": "f", "interval": "1h",
            "retry": {"max_attempts": 1}}}  # fmt: skip

    config = _configure(tmp_path, store_url, [pulled("odk-a")])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_CONFIG", None)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker", "--config", str(config)], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)  # fmt: skip
    try:
        _eventually(lambda: "delivery worker running" in log.read_text(), "the worker starts")
        _configure(tmp_path, store_url, [pulled("odk-a"), pulled("odk-b")])
        worker.send_signal(signal.SIGHUP)
        _eventually(lambda: "reload (SIGHUP) applied" in log.read_text(), "the worker reloads")
        assert "pull schedule: pull-odk-b every 3600s" in log.read_text()
        assert worker.poll() is None
    finally:
        _stop(worker)
    assert worker.returncode == 0


def test_sighup_to_gateway_worker_without_pulled_sources_is_no_error(tmp_path: Path) -> None:
    """A worker that ingests nothing (push sources only) has nothing to reload: SIGHUP to every unit
    (systemd's ExecReload, a config-management run) is logged as applied, not as a refused reload."""
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    store_url = f"sqlite:///{tmp_path}/store.db"
    config = _configure(tmp_path, store_url, [CHT])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWAY_CONFIG", None)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker", "--config", str(config)], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)  # fmt: skip
    try:
        _eventually(lambda: "delivery worker running" in log.read_text(), "the worker starts")
        _configure(tmp_path, store_url, [CHT, ODK])  # another push source: nothing for a worker to do
        worker.send_signal(signal.SIGHUP)
        _eventually(lambda: "reload (SIGHUP)" in log.read_text(), "the worker answers the signal")
        text = log.read_text()
        assert "reload (SIGHUP) applied" in text, text
        assert "ERROR" not in text, text
        assert worker.poll() is None
    finally:
        _stop(worker)
    assert worker.returncode == 0
