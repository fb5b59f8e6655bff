"""The test suite's watchdog: a stuck test stops the run and shows where it waits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_stuck_async_test_is_interrupted_with_its_threads_and_await_chain(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent("""
        from tests.support.watchdog import Watchdog

        def pytest_configure(config):
            config.pluginmanager.register(Watchdog(config, after=1.5), "gateway-watchdog")
    """)
    )
    (tmp_path / "test_stuck.py").write_text(
        textwrap.dedent("""
        import asyncio

        async def never_woken():
            await asyncio.Event().wait()

        async def test_waits_forever():
            await never_woken()

        def test_after():
            pass
    """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output  # interrupted, not passed, and not left hanging
    assert "test_stuck.py::test_waits_forever still running after 2 s" in output
    assert "Current thread" in output or "Thread 0x" in output  # every thread's stack
    assert "in test_waits_forever" in output and "in never_woken" in output and "in wait" in output
    assert "=== interrupting the run ===" in output
