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


def test_a_taken_port_is_refused_with_a_one_line_reason() -> None:
    """Exit 2 naming the address (README, command line), not a banner saying it serves and uvicorn's exit 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(sandbox_app, ["dhis2", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"gateway: cannot listen on 127.0.0.1:{port}: " in result.output
    assert "another process listens there" in result.output
    assert "DHIS2 sandbox 2.41.0 on" not in result.output
