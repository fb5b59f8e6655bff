"""Backfill benchmark (issue 14): records/s of ``gateway backfill`` over ``--records`` generated
records, with its resident memory sampled every ``--every`` seconds, next to posting the same
kind of records to ``POST /ingest/csv`` in the same run.

* ``backfill``: ``gateway backfill csv rows.jsonl --quiet`` as its own process (with
  ``--processes N``, its workers too) on a fresh store: SQLite by default, PostgreSQL with
  ``--postgres`` (a fresh schema, dropped afterwards). The bench reads the RSS of that process
  and its workers from ``/proc`` every ``--every`` s and prints each sample: flat means the
  backfill holds a batch, not the input.
* ``POST /ingest``: the first ``--baseline`` records (all of them by default, at most 20,000:
  at a few hundred records/s a million would take the afternoon) POSTed as JSON arrays of 500
  to the gateway app under uvicorn on loopback, on a fresh store of the same backend.

The records are line-list rows of the shipped ``csv`` mapping set, each with its own record and
patient ids. Wall-clock rates; the machine is shared with other work, so they are as measured.

With ``--kill-after S`` the backfill is SIGKILLed (with its workers) after S seconds and run
again: the second run goes on from the saved position, and the change feed is counted for
records stored twice (one Patient created per record, no second versions).

Run: ``python -m bench.backfill_bench [--records N] [--processes N] [--postgres] [--every S]
[--kill-after S]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from bench.pull_bench import serve
from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.backfill import expand, position_key
from gateway.ingest import SourceConfig
from gateway.settings import RateLimitSettings, Settings
from gateway.store import ApiClient, Store, open_store
from gateway.store.sql import SqlStore

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
PG_URL = os.environ.get("GATEWAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
HEADER = ("record_id", "visit_date", "chw_id", "village", "patient_id", "patient_name", "sex", "age_years", "fever",
          "rdt_result", "act_given", "referred", "referral_facility")  # fmt: skip


def record(n: int) -> dict[str, str]:
    """Line-list row ``n`` (its own record and patient ids)."""
    values = (f"LL-{n:08d}", f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}", f"CHW-{n % 500:04d}", "Kibuli",
              f"KBL-P-{n:08d}", "Okello Brian", "female" if n % 2 else "male", str(n % 80), "yes",
              ("positive", "negative")[n % 2], "yes", "no", "")  # fmt: skip
    return dict(zip(HEADER, values, strict=True))


def write_records(path: Path, count: int) -> None:
    """``count`` records as JSON lines (streamed: the generator holds none of them)."""
    with path.open("wb") as f:
        for n in range(count):
            f.write(orjson.dumps(record(n)) + b"\n")


@contextmanager
def fresh_store_url(tmp: Path, postgres: bool, name: str) -> Iterator[str]:
    """A store URL on a fresh database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if not postgres:
        yield f"sqlite:///{tmp}/{name}.db"
        return
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (0 once gone)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def backfill_rate(
    store_url: str, data: Path, count: int, processes: int, every: float, tmp: Path, kill_after: float | None = None
) -> float:
    """Records/s of ``gateway backfill`` in its own process; prints its RSS every ``every`` s.
    With ``kill_after``: SIGKILLed (workers too) after that many seconds, then run again to
    the end, and the store checked for records stored twice."""
    cfg = backfill_config(tmp, store_url)
    command = [sys.executable, "-m", "gateway", "backfill", "csv", str(data), "-c", str(cfg), "--quiet",
               "--processes", str(processes)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    samples: list[int] = []
    print(f"  {'t (s)':>7} {'RSS (MB)':>9}", flush=True)
    done_before = 0
    if kill_after is not None:
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)  # fmt: skip
        sample_until(first, started, every, samples, started + kill_after)
        if first.poll() is not None:
            raise SystemExit(f"the backfill ended before {kill_after:.0f} s: use more records")
        os.killpg(first.pid, signal.SIGKILL)  # the workers too: nothing may finish cleanly
        first.wait()
        done_before = saved_records(store_url, data)
        print(f"  kill -9 after {time.perf_counter() - started:.0f} s: {done_before:,} records saved as done;"
              " running again", flush=True)
        if len(samples) >= 3:
            settled = samples[len(samples) // 3 :]
            low, high = min(settled) / 1e6, max(settled) / 1e6
            print(f"  RSS of the killed run after its first third: {low:.1f}-{high:.1f} MB")
        samples = []  # the rerun is a new process: its own warm-up
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sample_until(process, started, every, samples, None)
    elapsed = time.perf_counter() - started
    output = process.stdout.read() if process.stdout else ""
    rest = count - done_before
    # A batch stored just before the kill, its position not yet saved, is read again: unchanged.
    summary = re.search(rf"csv: {rest} record\(s\): (\d+) stored, (\d+) unchanged, 0 deleted, 0 quarantined", output)
    if process.returncode != 0 or summary is None or sum(int(n) for n in summary.groups()) != rest:
        raise SystemExit(f"backfill failed ({process.returncode}):\n{output[-2000:]}")
    if kill_after is not None:
        creates, others, patients = change_counts(store_url)
        verdict = "no duplicates" if patients == count and not others else "DUPLICATES"
        print(f"  after the rerun ({summary.group(2)} records read again, unchanged): {patients:,} Patients for"
              f" {count:,} records, {creates:,} creations and {others:,} other changes in the feed ({verdict})",
              flush=True)  # fmt: skip
    if len(samples) >= 3:
        settled = samples[len(samples) // 3 :]  # after start-up and warm caches
        spread = (max(settled) - min(settled)) / 1e6
        verdict = "flat" if spread < 0.1 * max(settled) / 1e6 + 20 else "GROWING"
        print(f"  RSS after the first third: {min(settled) / 1e6:.1f}-{max(settled) / 1e6:.1f} MB ({verdict})")
    return count / elapsed


def sample_until(
    process: subprocess.Popen[str], started: float, every: float, samples: list[int], until: float | None
) -> None:
    """Print the RSS of ``process`` and its workers every ``every`` s until it ends (or ``until``)."""
    while process.poll() is None and (until is None or time.perf_counter() < until):
        deadline = time.perf_counter() + every
        while process.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            samples.append(tree_rss(process.pid))
            print(f"  {time.perf_counter() - started:>7.0f} {samples[-1] / 1e6:>9.1f}", flush=True)


def saved_records(store_url: str, data: Path) -> int:
    """Records of ``data`` the backfill saved as done (its persisted position)."""
    store = open_store(store_url)
    try:
        saved = store.pull_cursor(position_key("csv", expand([str(data)])[0]))
        return 0 if saved is None else int(orjson.loads(saved)["records"])
    finally:
        store.close()


def change_counts(store_url: str) -> tuple[int, int, int]:
    """(creations, other changes, Patients created) in the change feed: a record stored twice
    would show as a second version."""
    store = open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        with store._read_cursor() as cur:
            cur.execute("SELECT op, rtype, COUNT(*) FROM changes GROUP BY op, rtype")
            rows = cur.fetchall()
    finally:
        store.close()
    creates = sum(int(n) for op, _, n in rows if op == "create")
    patients = sum(int(n) for op, rtype, n in rows if op == "create" and rtype == "Patient")
    return creates, sum(int(n) for op, _, n in rows if op != "create"), patients


def csv_ingest_app(store_url: str) -> tuple[Store, str, Settings]:
    """The store (opened), an ``ingest:*`` token and the settings of an app serving the ``csv`` source."""
    store = open_store(store_url)
    token = new_token()
    store.save_client(ApiClient("bench", ("ingest:*",), datetime.now(UTC)), hash_token(token))
    settings = Settings(store_url=store_url, mappings_dir=MAPPINGS,
                        sources=[SourceConfig(name="csv", kind="csv", mapping="csv")],
                        rate_limit=RateLimitSettings(enabled=False), access_log=False)  # fmt: skip
    return store, token, settings


def backfill_config(tmp: Path, store_url: str) -> Path:
    """A configuration file for ``gateway backfill csv`` on ``store_url``."""
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        f"store_url: {store_url}\nqueue_url: sqlite:///{tmp}/queue.db\nmappings_dir: {MAPPINGS}\n"
        "sources:\n  - {name: csv, kind: csv, mapping: csv}\n", encoding="utf-8",
    )  # fmt: skip
    return cfg


def push_rate(store_url: str, count: int) -> float:
    """Records/s of POSTing ``count`` records to ``/ingest/csv`` in JSON arrays of 500."""
    store, token, settings = csv_ingest_app(store_url)
    try:
        with serve(create_app(settings, store=store)) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as client:  # fmt: skip
            started = time.perf_counter()
            for at in range(0, count, 500):
                answer = client.post("/ingest/csv", json=[record(n) for n in range(at, min(at + 500, count))])
                if answer.status_code != 200:
                    raise SystemExit(f"/ingest answered {answer.status_code}: {answer.text[:300]}")
            return count / (time.perf_counter() - started)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20_000, help="records to backfill (the goal: 1000000)")
    parser.add_argument("--baseline", type=int, default=None, help="records to POST (default: min(records, 20000))")
    parser.add_argument("--processes", type=int, default=1, help="backfill worker processes (PostgreSQL)")
    parser.add_argument("--postgres", action="store_true", help="stores on PostgreSQL instead of SQLite")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--kill-after", type=float, default=None,
                        help="SIGKILL the backfill after this many seconds, then run it again to the end")
    args = parser.parse_args(argv)
    baseline = args.baseline or min(args.records, 20_000)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"backfill of {args.records:,} records ({backend}, {args.processes} process(es)) vs POST /ingest"
          f" of {baseline:,}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "rows.jsonl"
        write_records(data, args.records)
        with fresh_store_url(tmp, args.postgres, "backfill") as url:
            backfilled = backfill_rate(url, data, args.records, args.processes, args.every, tmp, args.kill_after)
        with fresh_store_url(tmp, args.postgres, "push") as url:
            pushed = push_rate(url, baseline)
    print(f"{'way in':<16} {'records':>10} {'rec/s':>8} {'ratio':>7}")
    print(f"{'POST /ingest':<16} {baseline:>10,} {pushed:>8.0f} {1.0:>7.2f}")
    print(f"{'gateway backfill':<16} {args.records:>10,} {backfilled:>8.0f} {backfilled / pushed:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
