"""``version_number``: what a mapping's ``modified`` reads, as a number that grows with each edit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import MappingError
from gateway.mapping.versions import version_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1741950122481, 1741950122481.0),  # CHT reported_date, epoch ms
        (Decimal("3.5"), 3.5),
        ("42", 42.0),
        ("3-917fa2381192822767f010b95b45325b", 3.0),  # CouchDB _rev
        ("12-edited", 12.0),
        ("2025-05-13T09:41:21.004512Z", datetime(2025, 5, 13, 9, 41, 21, 4512, tzinfo=UTC).timestamp()),
        ("2025-05-13T11:41:21.004512+02:00", datetime(2025, 5, 13, 9, 41, 21, 4512, tzinfo=UTC).timestamp()),
        ("2025-05-13T09:41:21", datetime(2025, 5, 13, 9, 41, 21, tzinfo=UTC).timestamp()),  # no offset: UTC
        ("2025-05-13", datetime(2025, 5, 13, tzinfo=UTC).timestamp()),
        ("2025-05", datetime(2025, 5, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_versions(value: Any, expected: float) -> None:
    assert version_number([value], "modified") == expected


def test_times_and_revisions_order_as_their_sources_mean() -> None:
    times = ["2025-05-13", "2025-05-13T09:00:00Z", "2025-05-13T10:00:00+01:30", "2025-05-13T09:41:21.5Z"]
    assert sorted(times, key=lambda t: version_number([t], "m") or 0) == [times[0], times[2], times[1], times[3]]
    assert version_number(["10-a"], "m") > version_number(["9-b"], "m")  # type: ignore[operator]


def test_no_value_is_no_version() -> None:
    assert version_number([], "modified") is None


@pytest.mark.parametrize("values", [[True], ["yesterday"], [{"at": 1}], ["1", "2"], ["-3"]])
def test_what_is_no_version_names_the_field(values: list[Any]) -> None:
    with pytest.raises(MappingError) as caught:
        version_number(values, "properties.stamp")
    assert caught.value.path == "properties.stamp" and caught.value.code == "value"
