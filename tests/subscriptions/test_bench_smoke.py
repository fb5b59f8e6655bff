"""The notification latency bench runs at a tiny size and every receiver gets every change."""

from __future__ import annotations

from bench.notification_latency import run


def test_the_bench_measures_every_receiver() -> None:
    rows = run(changes=3, rate=50.0, poll=0.05, queue="sqlite")
    assert set(rows) == {"webhook (baseline)", "subscription id-only", "subscription full-resource"}
    assert all(len(values) == 3 and all(v > 0 for v in values) for values in rows.values())
