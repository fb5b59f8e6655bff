"""``gateway serve`` stops cleanly on SIGTERM and SIGINT: exit 0, and no SQLite WAL left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_gateway_exits_0_and_checkpoints_its_store(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path}/store.db",
           "GATEWAY_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db", "GATEWAY_PORT": str(port)}  # fmt: skip
    env.pop("GATEWAY_CONFIG", None)
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, timeout=30)
        assert (tmp_path / "store.db-wal").exists()  # the store is open in WAL mode
    finally:
        server.send_signal(stop)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr[-2000:]
    wal = tmp_path / "store.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """Not after the delivery worker and the scheduler started (uvicorn binds last), with exit 3."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path}/store.db",
               "GATEWAY_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db", "GATEWAY_PORT": str(port)}  # fmt: skip
        env.pop("GATEWAY_CONFIG", None)
        done = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"gateway: cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "another process listens there" in done.stderr
    assert "delivery worker" not in done.stderr and "Traceback" not in done.stderr


def test_a_broken_mapping_is_refused_naming_file_and_line_before_anything_starts(tmp_path: Path) -> None:
    """A typo in a mapping file: exit 2 with ``file:line`` on stderr, not uvicorn's startup traceback and exit 3."""
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings" / "csv", mappings / "csv")
    shutil.copytree(ROOT / "mappings" / "conceptmaps", mappings / "conceptmaps")
    rules = mappings / "csv" / "malaria-line-list.yaml"
    text = rules.read_text(encoding="utf-8")
    assert "visit_date" in text
    rules.write_text(text.replace("visit_date", "visit_dat"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path}/store.db",
           "GATEWAY_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db", "GATEWAY_PORT": str(free_port()),
           "GATEWAY_MAPPINGS_DIR": str(mappings),
           "GATEWAY_SOURCES": '[{"name": "csv", "kind": "csv", "mapping": "csv"}]'}  # fmt: skip
    env.pop("GATEWAY_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{rules}:" in done.stderr and "visit_dat" in done.stderr
    assert "Traceback" not in done.stderr and "delivery worker" not in done.stderr


def test_an_unreachable_store_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    """PostgreSQL down at start: the reason on one line and errors.py's exit code, not uvicorn's startup traceback."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        pg_port = closed.getsockname()[1]  # bound, never listening: connections are refused
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_STORE_URL": f"postgresql://nobody@127.0.0.1:{pg_port}/x",
               "GATEWAY_QUEUE_URL": f"sqlite:///{tmp_path}/queue.db", "GATEWAY_PORT": str(free_port())}  # fmt: skip
        env.pop("GATEWAY_CONFIG", None)
        done = subprocess.run([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "delivery worker" not in done.stderr
    assert "gateway: the PostgreSQL store is unavailable" in done.stderr
