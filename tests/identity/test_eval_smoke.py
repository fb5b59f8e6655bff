"""The matching evaluation (``python -m bench.identity_eval``) runs end to end at a tiny size."""

from __future__ import annotations

import pytest

from bench.identity_eval import main


def test_the_evaluation_prints_every_method_and_the_cost(capfd: pytest.CaptureFixture[str]) -> None:
    main(["--records", "800", "--size", "3000", "--probes", "50", "--skip-febrl", "--random-pairs", "5000"])
    out = capfd.readouterr().out  # the cost runs in a child process: capture the file descriptor
    for row in ("auto-link, hand-set m/u", "review band, EM", "recordlinkage ECM", "exact baseline"):
        assert row in out
    assert "evaluated on seed 2026" in out
    assert "cost at 3000 indexed Patients" in out and "bytes per indexed Patient" in out
