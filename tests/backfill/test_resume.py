"""A backfill killed with ``kill -9`` goes on from its saved position, and stores nothing twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from gateway.backfill import expand, position_key
from gateway.store import Store
from tests.backfill.conftest import MAPPINGS, created, rewritten, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 2000


def config(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"store_url: {store_url}\nqueue_url: sqlite:///{tmp_path}/queue.db\nmappings_dir: {MAPPINGS}\n"
        "sources:\n  - {name: csv, kind: csv, mapping: csv}\n",
        encoding="utf-8",
    )
    return path


def backfill(cfg: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "backfill", "csv", *args, "-c", str(cfg), "--batch", "100", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def saved_records(store: Store, key: str) -> int:
    saved = store.pull_cursor(key)
    return 0 if saved is None else int(orjson.loads(saved)["records"])


def test_kill_9_mid_run_then_rerun_stores_every_record_once(store: Store, store_url: str, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "rows.jsonl", RECORDS)
    cfg = config(tmp_path, store_url)
    key = position_key("csv", expand([str(data)])[0])
    first = backfill(cfg, str(data))
    deadline = time.monotonic() + 120
    while saved_records(store, key) < 300:  # some batches committed, most of the file still to read
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the backfill saved no position"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    done_before = saved_records(store, key)
    assert 300 <= done_before < RECORDS

    second = backfill(cfg, str(data))
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    found = re.search(r"csv: (\d+) record\(s\)", out)
    assert found is not None, out
    handled = int(found.group(1))
    assert handled == RECORDS - done_before  # it went on from the saved position
    assert created(store)["Patient"] == RECORDS  # every record stored ...
    assert rewritten(store) == 0  # ... once: the replayed batch (if any) wrote nothing again
    assert saved_records(store, key) == -1  # finished
