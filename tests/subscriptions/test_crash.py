"""A ``gateway worker`` process killed (SIGKILL) while notifications are in flight: every matching
event still reaches the subscriber, in order, once in effect (what was in flight is sent again
with the same event number after the lease, and the subscriber dedupes it)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.delivery.helpers import eventually
from tests.subscriptions.harness import Harness, subscription
from tests.subscriptions.test_delivery import _create, _organizations, _patient, _subscribe

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 40


def _worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli.worker", "--config", str(config)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _received_at_least(harness: Harness, count: int) -> bool:
    return len(harness.sandbox.receiver("emr").events) >= count


@pytest.mark.slow
async def test_a_killed_worker_loses_no_event_and_keeps_the_order(sqlite_harness: Harness, tmp_path: Path) -> None:
    h = sqlite_harness
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "store_url": h.settings.store_url, "queue_url": h.settings.queue_url,
        "delivery": {"lease": "1s", "poll_interval": "20ms"},
        "subscriptions": {"retry": {"initial_delay": "20ms", "max_delay": "200ms", "max_age": "1h"},
                          "timeout": "2s", "heartbeat_check": "1s"},
    }))
    writer = h.client("system/*.cruds")
    emr = h.client("system/Subscription.cruds", "system/Patient.rs")
    await _organizations(writer)
    await _subscribe(emr, subscription("new-patient", h.endpoint("emr"),
                                       filters=["Patient?organization=Organization/north"]))
    expected = []
    for n in range(PATIENTS):
        expected.append("Patient/" + await _create(writer, _patient("north")))
        if n % 4 == 0:
            await _create(writer, _patient("south"))
    h.sandbox.fault("emr", delay=0.05, delayed=100_000)  # each answer takes a while: kills land mid-send
    log = tmp_path / "worker.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for kill_at in (8, 22):
            procs.append(_worker(config, log))
            await eventually(functools.partial(_received_at_least, h, kill_at), timeout=60)
            procs[-1].send_signal(signal.SIGKILL)
            assert procs[-1].wait(timeout=10) == -signal.SIGKILL
            assert not _received_at_least(h, PATIENTS), "the run finished before the kill"
        procs.append(_worker(config, log))
        await eventually(functools.partial(_received_at_least, h, PATIENTS), timeout=60, every=0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
    receiver = h.sandbox.receiver("emr")
    assert receiver.numbers() == list(range(1, PATIENTS + 1)), log.read_text()[-2000:]
    assert receiver.order_errors == []
    assert receiver.focus() == expected
