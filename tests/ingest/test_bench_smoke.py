"""``python -m bench.ingest_bench --mode served`` runs at a tiny size and prints its table."""

from __future__ import annotations

import re

import pytest

from bench.ingest_bench import main


def test_the_served_ingest_bench_runs_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--mode", "served", "--records", "200", "--warm", "100"]) == 0
    out = capsys.readouterr().out
    for row in ("100/request, naive", "in-process", "gateway serve --workers 1", "gateway serve --workers 2"):
        lines = [line for line in out.splitlines() if row in line]
        (rate,) = [found for line in lines for found in re.findall(r"([\d,]+) +[\d.]+x$", line)]
        assert float(rate.replace(",", "")) > 0
    assert len(re.findall(r"[\d,]+ records per CPU-second", out)) == 2
    assert "goal, end to end >= 1,000 records/s" in out
