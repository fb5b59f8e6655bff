"""Run every benchmark in turn: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

BENCHMARKS = [
    "bench.read_search", "bench.rate_limit", "bench.audit_overhead", "bench.policy_overhead", "bench.ingest_bench",
    "bench.queue_bench", "bench.dhis2_bench", "bench.cli_startup", "bench.validation_cost", "bench.backoff_bench",
    "bench.sort_growth", "bench.mapping_speed", "bench.pull_bench", "bench.identity_eval", "bench.bulk_export",
    "bench.notification_latency",
    "bench.backfill_bench", "bench.live_beside_backfill", "bench.national_load", "bench.growth_bench",
    "bench.crud_mix", "bench.store_size",
]


def main() -> int:
    """Run each benchmark module that exists as its own process; return non-zero if one failed."""
    failed = 0
    for name in BENCHMARKS:
        if importlib.util.find_spec(name) is None:
            continue
        print(f"\n######## {name}", flush=True)
        failed += subprocess.call([sys.executable, "-m", name]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
