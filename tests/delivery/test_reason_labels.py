"""Reason codes as metric labels: a destination chooses part of them, so their shape and number are bounded."""

from __future__ import annotations

import pytest

from gateway.delivery import worker


def test_well_formed_reasons_are_labels_and_others_are_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "_reason_labels", set())
    assert worker.reason_label("dhis2_E1082") == "dhis2_E1082"
    assert worker.reason_label("http_503") == "http_503"
    assert worker.reason_label("dhis2_E1082 <script>") == "other"  # a code a hostile server made up
    assert worker.reason_label("dhis2_" + "E" * 60) == "other"


def test_past_the_bound_new_reasons_count_as_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "_reason_labels", {f"dhis2_E{n}" for n in range(worker._MAX_REASON_LABELS)})
    assert worker.reason_label("dhis2_E0") == "dhis2_E0"  # seen before: still itself
    assert worker.reason_label("dhis2_E99999") == "other"
