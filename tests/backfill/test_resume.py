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

from gateway.backfill import Input, expand, position_key
from gateway.store import Store, open_store
from tests.backfill.conftest import MAPPINGS, created, rewritten, write_jsonl
from tests.support.cuttable_link import linked_schema_url

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


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_a_parallel_backfill_with_its_workers_and_a_rerun_finishes_it(
    pg_store: Store, pg_schema_url: str, tmp_path: Path
) -> None:
    """``systemctl stop`` or ``kill`` sends SIGTERM to the command's process: it exits 0 after its
    worker processes stopped at a saved batch, leaving none of them running on (orphans that went
    on writing while the operator believed the backfill stopped, beside the rerun)."""
    store = pg_store
    data = write_jsonl(tmp_path / "rows.jsonl", RECORDS)
    cfg = config(tmp_path, pg_schema_url)
    keys = [position_key("csv", unit) for unit in _units_of(data, 2)]
    first = backfill(cfg, str(data), "--processes", "2")
    deadline = time.monotonic() + 120
    while sum(saved_records(store, key) for key in keys) < 300:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the backfill saved no position"
        time.sleep(0.05)
    workers = [pid for pid in _children(first.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "stopped" in err
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "worker processes went on after the backfill stopped"
        time.sleep(0.1)
    done_before = sum(saved_records(store, key) for key in keys)
    assert 300 <= done_before < RECORDS

    second = backfill(cfg, str(data), "--processes", "2")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    found = re.search(r"csv: (\d+) record\(s\)", out)
    assert found is not None, out
    assert int(found.group(1)) == RECORDS - done_before  # it went on from the saved positions
    assert created(store)["Patient"] == RECORDS
    assert rewritten(store) == 0


def _units_of(data: Path, processes: int) -> list[Input]:
    from gateway.backfill import split

    return [part for item in expand([str(data)]) for part in split(item, processes)]


def test_a_store_outage_mid_backfill_is_waited_out(tmp_path: Path) -> None:
    """PostgreSQL restarts (or fails over) during a backfill of hours: the batch in progress is tried
    again once the store answers, instead of the command dying with a traceback half-way."""
    with linked_schema_url() as (url, direct_url, link):
        store = open_store(direct_url)
        try:
            data = write_jsonl(tmp_path / "rows.jsonl", RECORDS)
            cfg = config(tmp_path, url)
            key = position_key("csv", expand([str(data)])[0])
            run = backfill(cfg, str(data))
            deadline = time.monotonic() + 120
            while saved_records(store, key) < 300:
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "the backfill saved no position"
                time.sleep(0.05)
            link.cut()  # the database goes away mid-run ...
            time.sleep(3)
            assert run.poll() is None, run.communicate()
            link.mend()  # ... and comes back
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, err
            # Said, by type only: the outage, or (the cut landing on a COMMIT in flight, the writer
            # asking the server once it answers again) that commit's fate, which covers the outage.
            assert "store is unavailable" in err or "the answer to a COMMIT was lost" in err, err
            assert created(store)["Patient"] == RECORDS
            assert rewritten(store) == 0
            assert saved_records(store, key) == -1
        finally:
            store.close()
