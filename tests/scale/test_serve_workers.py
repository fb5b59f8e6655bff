"""``gateway serve --workers N``: several API processes on one PostgreSQL store; SQLite refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from gateway.store import open_store
from tests.conftest import make_token
from tests.scale.test_two_processes import ROOT
from tests.support.processes import free_port, wait_healthy


def _env(port: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(port)}
    env.pop("GATEWAY_CONFIG", None)
    return env


def test_a_sqlite_store_refuses_more_than_one_worker(tmp_path: Path) -> None:
    env = {**_env(free_port()), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path}/one.db"}
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--workers", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "--workers needs a PostgreSQL store" in done.stderr
    assert not (tmp_path / "one.db").exists()  # refused before opening anything


def test_two_workers_serve_one_postgresql_store(tmp_path: Path, pg_schema_url: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"store_url": pg_schema_url, "queue_url": f"sqlite:///{tmp_path}/queue.db"}))
    store = open_store(pg_schema_url)
    try:
        token = make_token(store, ("system/*.cruds",))
    finally:
        store.close()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--workers", "2", "--config", str(config)],
                              cwd=tmp_path, env=_env(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, server)
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.pid)], capture_output=True, text=True)
        assert len(children.stdout.split()) >= 2  # one process per worker under the supervisor
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            made = [client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
                    for _ in range(20)]  # fmt: skip
            assert all(r.status_code == 201 for r in made)
            found = client.get("/fhir/Patient", params={"_summary": "count"}).json()
            assert found["total"] == 20
            for _ in range(4):  # whichever worker takes them
                assert client.get("/fhir/Patient", params={"name": "Wilfrid"}).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    # Each worker logs the gateway's access lines only: uvicorn's would hold the path and query as sent.
    assert '"route":"/fhir/{rtype}"' in stderr
    assert "uvicorn.access" not in stderr
    assert "Wilfrid" not in stderr
