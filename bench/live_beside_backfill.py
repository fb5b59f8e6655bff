"""Live pushes beside a backfill on SQLite (issue 14, item 3): how long a CHW app's one-record
``POST /ingest/csv`` waits while ``gateway backfill`` writes the same store from its own process.

SQLite has one write lock and no queue for it: a waiting writer polls (1 … 100 ms sleeps), so a
backfill that starts its next transaction the moment the last one commits can keep a live write
waiting for many of its transactions. ``gateway.store.write_turns`` makes the backfill give way.

Three rows, one run, the same store file and records:

* ``alone``: the live pushes with no backfill (the baseline);
* ``beside backfill``: the same pushes while this tree's ``gateway backfill`` runs;
* ``beside backfill (compare)``: with ``--compare DIR``, while the backfill of another tree (e.g.
  ``git archive`` of the commit before the turns) runs; the live server is this tree's in both.

Run: ``python -m bench.live_beside_backfill [--records N] [--pushes N] [--compare DIR]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.backfill_bench import ROOT, backfill_config, csv_ingest_app, record, write_records
from bench.pull_bench import serve
from gateway.api.app import create_app


def live_latencies(url: str, token: str, pushes: int, first: int, until: subprocess.Popen[str] | None) -> list[float]:
    """Seconds each one-record push took (one every 0.25 s), while ``until`` runs if given."""
    taken: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for n in range(first, first + pushes):
            if until is not None and until.poll() is not None:
                break
            started = time.perf_counter()
            answer = client.post("/ingest/csv", json=[record(n)])
            taken.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise SystemExit(f"/ingest answered {answer.status_code}: {answer.text[:300]}")
            time.sleep(0.25)
    return taken


def row(name: str, taken: list[float], baseline: float | None) -> str:
    """One table row: pushes, p50/p95/max in ms, and the p50 against the baseline's."""
    ordered = sorted(taken)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    ratio = "" if baseline is None else f"{p50 / baseline:.1f}x"
    return f"| {name} | {len(taken)} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {ordered[-1] * 1000:.0f} | {ratio} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=30_000, help="records the backfill writes")
    parser.add_argument("--pushes", type=int, default=40, help="live pushes per row")
    parser.add_argument("--compare", type=Path, default=None, help="another tree whose backfill to run too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "rows.jsonl"
        write_records(data, args.records)
        store_url = f"sqlite:///{tmp}/live.db"
        store, token, settings = csv_ingest_app(store_url)
        cfg = backfill_config(tmp, store_url)
        rows: list[str] = []
        try:
            with serve(create_app(settings, store=store)) as url:
                alone = live_latencies(url, token, args.pushes, 10_000_000, None)
                baseline = statistics.median(alone)
                rows.append(row("alone (baseline)", alone, None))
                trees = [("beside backfill", ROOT)]
                if args.compare is not None:
                    trees.append(("beside backfill (compare)", args.compare.resolve()))
                for n, (name, tree) in enumerate(trees):
                    command = [sys.executable, "-m", "gateway", "backfill", "csv", str(data), "-c", str(cfg),
                               "--quiet", "--restart"]  # fmt: skip
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    backfill = subprocess.Popen(command, env=env, cwd=tree, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, text=True)  # fmt: skip
                    try:
                        time.sleep(3.0)  # past start-up: the backfill is writing
                        taken = live_latencies(url, token, args.pushes, 20_000_000 + n * 1_000_000, backfill)
                    finally:
                        backfill.kill()
                        backfill.wait()
                    if len(taken) < args.pushes:
                        print(f"  ({name}: the backfill ended after {len(taken)} pushes; give more --records)")
                    rows.append(row(name, taken, baseline))
        finally:
            store.close()
    print("| live one-record push | pushes | p50 ms | p95 ms | max ms | p50 vs alone |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
