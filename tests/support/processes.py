"""Helpers for tests that start the gateway as a real process: a free port, waiting until it answers,
``gateway serve`` as a child process, and the CLI as an operator runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["GatewayProcess", "free_port", "gateway_cli", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[2]


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


class GatewayProcess:
    """``gateway serve --config CONFIG`` (or another ``command``, e.g. ``worker``) as a child process on a
    free port, its log in ``cwd``/<command>-N.log."""

    def __init__(self, config: Path, cwd: Path, environ: dict[str, str] | None = None, command: str = "serve") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(self.port), **(environ or {})}
        env.pop("GATEWAY_CONFIG", None)
        self.log = cwd / f"{command}-{self.port}.log"
        with self.log.open("w") as log:
            self.process: subprocess.Popen[str] = subprocess.Popen(
                [sys.executable, "-m", "gateway", command, "--config", str(config)],
                cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> GatewayProcess:
        """Return once /healthz answers; fail with the end of its log if it died first."""
        try:
            wait_healthy(self.url, self.process, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.log.read_text()[-3000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no release of leases, nothing flushed."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGTERM and wait (SIGKILL after 30 s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def gateway_cli(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> str:
    """Run ``python -m gateway ARGS`` as an operator would; its stdout (fail with stderr if it exits non-zero)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(environ or {})}
    env.pop("GATEWAY_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"gateway {' '.join(args)}: exit {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout
