"""A backfill in another process gives way to live writers on SQLite (``gateway.store.write_turns``):
a live write waits for the backfill transaction of the moment, not until the backfill ends."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gateway.store.sqlite import SQLiteStore
from gateway.store.write_turns import WriteTurns

_ROOT = Path(__file__).resolve().parents[2]

# Back-to-back transactions of ~0.15 s each on the backfill lane, as `gateway backfill` writes.
_BACKFILL = """
import sys, time
from gateway.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
store.feed_lane = sys.argv[2]
until = time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < until:
    with store.transaction() as tx:
        for i in range(20):
            n += 1
            tx.update({"resourceType": "Patient", "id": f"b{n}"})
        if n == 20:
            open(sys.argv[1] + ".started", "w").close()
        time.sleep(0.15)
store.close()
"""


def _live_write_latencies(tmp_path: Path, lane: str) -> list[float]:
    path = str(tmp_path / "turns.db")
    live = SQLiteStore(path)
    live.migrate()
    backfill = subprocess.Popen(
        [sys.executable, "-c", _BACKFILL, path, lane, "6"],
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
    )
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path + ".started"):
            assert backfill.poll() is None and time.monotonic() < deadline, "the backfill did not start"
            time.sleep(0.01)
        for n in range(8):
            started = time.monotonic()
            with live.transaction() as tx:
                tx.update({"resourceType": "Patient", "id": f"live{n}"})
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        assert backfill.wait(timeout=60) == 0
    finally:
        backfill.kill()
        live.close()
    return latencies


def test_a_live_write_waits_for_one_backfill_transaction_at_most(tmp_path: Path) -> None:
    latencies = _live_write_latencies(tmp_path, "backfill")
    # One background transaction (0.15 s) and one turn of SQLite's busy handler (<= 0.1 s) at most,
    # with room for a loaded test machine; without turns a live write waited for the whole backfill.
    assert max(latencies) < 1.5, latencies
    assert statistics.median(latencies) < 0.6, latencies


def test_a_background_writer_waits_for_live_writers_no_longer_than_its_limit(tmp_path: Path) -> None:
    database = str(tmp_path / "limit.db")
    holder = subprocess.Popen(  # a live writer of another process waiting for the lock (for 3 s)
        [sys.executable, "-c", (
            "import sys, time\n"
            "from gateway.store.write_turns import WriteTurns\n"
            "turns = WriteTurns(sys.argv[1])\n"
            "with turns.live():\n"
            "    open(sys.argv[1] + '.held', 'w').close()\n"
            "    time.sleep(3)\n"
        ), database],
        env={**os.environ, "PYTHONPATH": str(_ROOT)},
    )
    turns = WriteTurns(database)
    try:
        while not os.path.exists(database + ".held"):
            assert holder.poll() is None
            time.sleep(0.01)
        started = time.monotonic()
        turns.give_way(limit=0.3)
        waited = time.monotonic() - started
        assert 0.25 <= waited < 1.5
    finally:
        holder.kill()
        holder.wait()
        turns.close()

