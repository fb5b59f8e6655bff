"""Mapping speed (issue 15): records/s per core with the static checks compiled in, against
the engine before them, measured in the same run.

Workload: every golden input record of the shipped mapping sets that maps cleanly, mapped
over and over on one thread; the rate is records per CPU-second (so per core), the best of
several slices (other processes only ever slow a slice down).

The baseline is the gateway at ``--baseline`` (default: the commit before the static checks
and the language additions), extracted with ``git archive`` into a temporary folder. Each
engine runs in its own process, which imports ``gateway`` from its own tree and loads the
same ``mappings/`` folder; they alternate for ``--rounds`` rounds and the best rate of each
is reported. Each engine loads the ``mappings/`` folder of its own tree (the baseline's
from ``git archive`` too: ``set.yaml`` gained keys an older engine refuses); the golden
records are the same. Load time (``load_mappings``: compile plus, now, the static checks and
the form definitions they read) is shown too: the checks cost load time, not per-record time.

Goal: >= 5,000 records/s per core, and >= 0.9 of the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MAPPINGS = REPO / "mappings"
BASELINE = "ae3d569"  # main before the static checks (issue 15)


def worker(seconds: float, windows: int, mappings: Path = MAPPINGS) -> dict[str, float]:
    """Measure the ``gateway`` importable here: load seconds, records per CPU-second."""
    import gateway
    from gateway.mapping import MappingError, find_cases, load_mapping_sets, read_records

    print(f"gateway from {Path(gateway.__file__).parent}", file=sys.stderr)

    start = time.process_time()
    sets = load_mapping_sets(mappings)
    load = time.process_time() - start
    items: list[tuple[Any, Any]] = []
    for _, mapping_set in sorted(sets.items()):
        for case in find_cases(mapping_set):
            for record in read_records(case.input_path)[0]:
                try:
                    mapping_set.map_record(record)
                except MappingError:
                    continue
                items.append((mapping_set, record))
    best = 0.0
    for _ in range(windows):
        count = 0
        start = time.process_time()
        while time.process_time() - start < seconds / windows:
            for mapping_set, record in items:
                mapping_set.map_record(record)
            count += len(items)
        best = max(best, count / (time.process_time() - start))
    return {"load_s": load, "rate": best, "records": float(len(items))}


def _extract(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "gateway", "mappings"], check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def _run(tree: Path, seconds: float, windows: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.mapping_speed", "--worker", "--seconds", str(seconds),
         "--windows", str(windows), "--mappings", str(tree / "mappings")],
        check=True, capture_output=True, text=True, env=env, cwd=tree if tree != REPO else REPO,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Run both engines in turn and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per measurement (default 3)")
    parser.add_argument("--windows", type=int, default=6, help="slices per measurement (default 6)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--baseline", default=BASELINE, help=f"git ref of the baseline engine (default {BASELINE})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mappings", type=Path, default=MAPPINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.seconds, args.windows, args.mappings)))
        return 0
    with tempfile.TemporaryDirectory() as temp:
        base_tree = _extract(args.baseline, Path(temp))
        (base_tree / "bench").symlink_to(REPO / "bench", target_is_directory=True)
        results: dict[str, list[dict[str, float]]] = {"checked": [], "baseline": []}
        trees = {"checked": REPO, "baseline": base_tree}
        for round_number in range(args.rounds):
            order = ("checked", "baseline") if round_number % 2 == 0 else ("baseline", "checked")
            for name in order:  # alternate who goes first: a busy machine favours neither
                results[name].append(_run(trees[name], args.seconds, args.windows))
    best = {name: max(rows, key=lambda row: row["rate"]) for name, rows in results.items()}
    load = {name: min(row["load_s"] for row in rows) for name, rows in results.items()}
    base = best["baseline"]["rate"]
    print(f"workload: {best['checked']['records']:.0f} golden records ({best['baseline']['records']:.0f} "
          "for the baseline), one thread, records per CPU-second")
    print(f"\n{'engine':44} {'records/s':>10} {'ratio':>6} {'load s':>7}")
    for name, label in (("checked", "static checks compiled in (this tree)"),
                        ("baseline", f"engine before the checks ({args.baseline})")):
        rate = best[name]["rate"]
        print(f"{label:44} {rate:10,.0f} {rate / base:6.2f} {load[name]:7.2f}")
    rate = best["checked"]["rate"]
    ok = rate >= 5000 and rate / base >= 0.9
    print(f"\ngoal, >= 5,000 records/s per core and >= 0.9 of the baseline: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
