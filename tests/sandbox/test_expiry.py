"""Expiry days as dhis2-core judges them (``DataSet.isLocked``): a period is locked once its end
date (the last day, at midnight) plus ``expiryDays`` days is before now, i.e. from the start of
day ``end + expiryDays``, not a day later. A lenient sandbox would accept a value DHIS2 refuses."""

from __future__ import annotations

from datetime import date

import pytest

from dhis2_sandbox.aggregate import AggregateParams, run_data_value_import
from dhis2_sandbox.catalog import load_catalog
from dhis2_sandbox.storage import open_store
from tests.sandbox.conftest import Demo


@pytest.mark.parametrize(
    ("today", "status"),
    [(date(2024, 6, 9), "SUCCESS"), (date(2024, 6, 10), "WARNING"), (date(2024, 6, 11), "WARNING")],
)
def test_a_period_is_locked_from_the_day_its_expiry_days_run_out(today: date, status: str) -> None:
    catalog = load_catalog()
    demo = Demo(catalog)
    data_set = catalog.get("dataSets", demo.data_set)
    assert data_set is not None and data_set["periodType"] == "Monthly"
    data_set["expiryDays"] = 10  # May 2024 ends on the 31st: locked from 10 June, 00:00
    body = {
        "dataSet": demo.data_set,
        "period": "202405",
        "orgUnit": demo.ou("CU_KISIWA"),
        "dataValues": [{"dataElement": demo.de("CHW_M_HH_VISITED"), "value": "12"}],
    }
    store = open_store(None)
    try:
        result = run_data_value_import(
            body,
            AggregateParams(),
            catalog,
            store,
            username="admin",
            capture_roots=None,
            version=(2, 41),
            today=today,
        )
    finally:
        store.close()
    assert result.status == status
    codes = [c["errorCode"] for c in result.summary["conflicts"]]
    assert codes == ([] if status == "SUCCESS" else ["E7640"])
