"""Command-line start-up benchmark (issue 10): how long ``gateway --help`` takes.

Rows, measured in one run, each the median of ``--runs`` fresh processes (wall clock):
a bare interpreter (``python -c pass``), the interpreter importing Typer (the floor the
command line stands on), and ``gateway --help`` itself. The goal is ``gateway --help`` under
0.3 s; the ratios say how much of it is the gateway's own.

Run: ``python -m bench.cli_startup [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], runs: int) -> float:
    """Median wall-clock seconds of ``runs`` runs of ``argv``."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    rows = [
        ("python -c pass", timed([sys.executable, "-c", "pass"], args.runs)),
        ("python -c 'import typer'", timed([sys.executable, "-c", "import typer"], args.runs)),
        ("gateway --help", timed([sys.executable, "-m", "gateway", "--help"], args.runs)),
    ]
    base = rows[1][1]
    print(f"{'command':28} {'median s':>9} {'vs typer':>9}")
    for label, seconds in rows:
        print(f"{label:28} {seconds:9.3f} {seconds / base:8.2f}x")
    verdict = "met" if rows[2][1] < 0.3 else "NOT met"
    print(f"\ngoal, gateway --help under 0.3 s: {verdict} ({rows[2][1]:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
