"""``gateway sandbox dhis2`` serves the sandbox until stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from gateway.cli.sandbox import sandbox_app


def test_help_lists_the_dhis2_command() -> None:
    result = CliRunner().invoke(sandbox_app, ["dhis2", "--help"])
    assert result.exit_code == 0 and "--port" in result.output


def test_the_command_serves_until_terminated() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = "from gateway.cli.sandbox import sandbox_app; sandbox_app()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "dhis2", "--port", str(port), "--version", "2.42.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/ping", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the sandbox exited early"
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        assert response.text == "pong"
        info = httpx.get(f"http://127.0.0.1:{port}/api/system/info", auth=("admin", "district")).json()
        assert info["version"] == "2.42.1"
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
