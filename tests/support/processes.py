"""Helpers for tests that start the gateway as a real process: a free port, waiting until it answers."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx

__all__ = ["free_port", "wait_healthy"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Wait until ``base``/healthz answers 200; fail naming the process's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stderr.read() if process.stderr and process.poll() is not None else ""
            raise AssertionError(f"gateway did not start: {output}")
        time.sleep(0.2)
