"""``python -m bench.backfill_bench`` runs at a tiny size and prints its table."""

from __future__ import annotations

import pytest

from bench.backfill_bench import main


def test_the_backfill_bench_runs_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--records", "120", "--every", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "POST /ingest" in out and "gateway backfill" in out and "RSS (MB)" in out
