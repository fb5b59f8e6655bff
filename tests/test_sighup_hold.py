"""A SIGHUP that comes while a process is still starting is a reload once it runs, not lost or fatal."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from gateway.reload import hold_sighup, reload_on_sighup

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")


class _Reloads:
    """What ``reload_on_sighup`` asks of a reloader: ``reload_and_log``, counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def reload_and_log(self, trigger: str) -> None:
        self.calls.append(trigger)


async def _settle(reloads: _Reloads, count: int) -> None:
    for _ in range(100):
        if len(reloads.calls) >= count:
            return
        await asyncio.sleep(0.01)


async def test_a_sighup_held_while_starting_reloads_once_the_reloader_takes_over() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    reloads = _Reloads()
    try:
        hold_sighup()
        # A --workers supervisor passes SIGHUP on to a worker still building its app: it was ignored
        # (and that worker served the old configuration until the next SIGHUP).
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloads.calls == []
        stop = reload_on_sighup(reloads)  # type: ignore[arg-type]
        await _settle(reloads, 1)
        assert reloads.calls == ["SIGHUP"]
        os.kill(os.getpid(), signal.SIGHUP)  # later ones as before: one reload each
        await _settle(reloads, 2)
        assert reloads.calls == ["SIGHUP", "SIGHUP"]
        stop()
        await asyncio.sleep(0.05)
        assert reloads.calls == ["SIGHUP", "SIGHUP"]  # nothing held over into a later process's start
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_a_sighup_sent_to_a_worker_before_it_could_take_it_waits_for_it() -> None:
    # A --workers supervisor starts each worker with SIGHUP blocked: one sent that early is
    # pending (its default action would end the process) until the worker holds it.
    previous = signal.getsignal(signal.SIGHUP)
    reloads = _Reloads()
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        # At this thread: a worker's every thread has it blocked; this test process has others that do not.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGHUP)
        assert signal.SIGHUP in signal.sigpending()
        hold_sighup()
        assert signal.SIGHUP not in signal.sigpending()
        stop = reload_on_sighup(reloads)  # type: ignore[arg-type]
        await _settle(reloads, 1)
        assert reloads.calls == ["SIGHUP"]
        stop()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        signal.signal(signal.SIGHUP, previous)
