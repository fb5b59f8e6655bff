"""``format_instant``: FHIR instants with milliseconds, as ``datetime.fromtimestamp`` rounds them."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from gateway.search.dates import format_instant


def _by_datetime(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def test_instants_match_the_datetime_rounding_everywhere() -> None:
    rng = random.Random(14)
    epochs = [rng.uniform(0, 4e9) for _ in range(50_000)]
    epochs += [rng.randrange(0, 4 * 10**9) + ms / 1000 for _ in range(5_000) for ms in (0, 1, 500, 999)]
    epochs += [second + 0.9999995 for second in range(0, 10**9, 997_331)]  # rounds up into the next second
    epochs += [0.0, 1e-7, 0.0009999999, -1.5, -0.0004]
    assert [format_instant(e) for e in epochs] == [_by_datetime(e) for e in epochs]
    assert format_instant(1796543104.165) == "2026-12-06T07:45:04.165Z"
