"""A test stuck for ``STUCK_AFTER`` seconds stops the run with a picture of where it waits.

Without it a hang (an await nothing will ever wake) sits until CI's own limit and leaves no
trace. With it, every thread's stack and every pending asyncio task's chain of awaits is
written to the terminal, and the run is interrupted (as Ctrl-C would), so it fails in minutes
and says where.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Generator
from typing import Any

import pytest

#: Far above the slowest test of the suite (about 2 minutes on a slow day), and still well inside
#: CI's own limit; a hunt for a rare hang may set ``GATEWAY_TEST_STUCK_AFTER`` lower.
STUCK_AFTER = float(os.environ.get("GATEWAY_TEST_STUCK_AFTER", "1800"))


class Watchdog:
    """Times each test's setup, call and teardown together; reports and interrupts a stuck one."""

    def __init__(self, config: pytest.Config, after: float = STUCK_AFTER) -> None:
        self.after = after
        capture = config.pluginmanager.getplugin("capturemanager")
        # Written to while the test's output is captured: keep a handle on the real stderr.
        if capture is not None:
            with capture.global_and_fixture_disabled():
                self._fd = os.dup(2)
        else:
            self._fd = os.dup(2)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
        """Arm a timer for the test; disarm it once the test is over."""
        timer = threading.Timer(self.after, self.stuck, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
        try:
            return (yield)
        finally:
            timer.cancel()

    def stuck(self, nodeid: str) -> None:
        """Write where every thread and task waits, then interrupt the main thread."""
        self.write(f"\n\n=== {nodeid} still running after {self.after:.0f} s: threads and asyncio tasks ===\n")
        faulthandler.dump_traceback(file=self._fd, all_threads=True)
        for loop in _running_loops():
            if loop.is_closed():
                continue
            try:
                tasks = list(asyncio.all_tasks(loop))
            except RuntimeError:  # the set changed while copied: once more
                tasks = list(asyncio.all_tasks(loop))
            self.write(f"--- event loop {id(loop):#x} (running: {loop.is_running()}), {len(tasks)} tasks\n")
            for task in tasks:
                self.write(f"{task!r}\n" + "".join(f"    {line}\n" for line in await_chain(task)))
        self.write("=== interrupting the run ===\n")
        # A real SIGINT, not ``_thread.interrupt_main``: only a signal wakes a main thread blocked
        # in a system call (the event loop's select).
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def write(self, text: str) -> None:
        """Write to the real stderr."""
        os.write(self._fd, text.encode(errors="replace"))


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    """The event loops some thread is running now, found in their ``run_forever`` frames (a scan
    of the garbage collector's objects missed the loop of a stuck fixture teardown)."""
    loops: list[asyncio.AbstractEventLoop] = []
    for frame in sys._current_frames().values():
        at: Any = frame
        while at is not None:
            candidate = at.f_locals.get("self") if at.f_code.co_name == "run_forever" else None
            if isinstance(candidate, asyncio.AbstractEventLoop) and candidate not in loops:
                loops.append(candidate)
            at = at.f_back
    return loops


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits: each coroutine of its chain of awaits, then what the innermost one awaits."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = _first(awaited, "cr_frame", "gi_frame", "ag_frame")
        if frame is None:
            lines.append(f"awaits {awaited!r}"[:300])
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaited = _first(awaited, "cr_await", "gi_yieldfrom", "ag_await")
    return lines


def _first(obj: Any, *names: str) -> Any:
    """The first of a coroutine's, generator's or async generator's attributes ``names`` that it has."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None
