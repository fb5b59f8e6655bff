"""Reading an input holds one record at a time: memory stays flat whatever the input's size.

The ingest side holds one batch (``BackfillRunner``); its caches (date parsing, 8,192 entries)
fill in the first thousands of records, so a flat run needs far more records than a test should
take: ``python -m bench.backfill_bench`` samples the RSS of a long run every 10 s instead.
"""

from __future__ import annotations

import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.backfill import expand
from gateway.backfill.readers import Item, Resume, read
from tests.backfill.conftest import line_list, write_csv, write_jsonl

RECORDS = 20_000  # 5.5 MB as JSON, 1.9 MB as CSV: held whole and parsed, any of them is several times the bound
BOUND = 4 * 1024 * 1024


def json_array(path: Path, count: int) -> Path:
    with path.open("wb") as f:
        f.write(b'{"meta": {"next": null}, "objects": [')
        for n in range(count):
            f.write((b"," if n else b"") + orjson.dumps(line_list(n)))
        f.write(b"]}")
    return path


def zipped(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(write_csv(path.with_suffix(".csv"), count), "submissions.csv")
    return path


def peak_while(items: Iterator[Item]) -> tuple[int, int]:
    """(records read, peak traced bytes) while draining ``items``."""
    tracemalloc.start()
    try:
        count = sum(1 for _ in items)
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make", [
    lambda p: write_jsonl(p / "rows.jsonl", RECORDS),
    lambda p: json_array(p / "forms.json", RECORDS),
    lambda p: write_csv(p / "rows.csv", RECORDS),
    lambda p: zipped(p / "export.zip", RECORDS),
], ids=["jsonl", "json", "csv", "zip"])  # fmt: skip
def test_reading_20k_records_stays_under_a_few_megabytes(tmp_path: Path, make) -> None:
    [item] = expand([str(make(tmp_path))])
    count, peak = peak_while(read(item, Resume()))
    assert count == RECORDS
    assert peak < BOUND, f"{item.format}: {peak / 1e6:.1f} MB at peak"


def test_a_resumed_json_array_skips_without_holding_what_it_skips(tmp_path: Path) -> None:
    [item] = expand([str(json_array(tmp_path / "forms.json", RECORDS))])
    count, peak = peak_while(read(item, Resume(records=RECORDS - 10)))
    assert count == 10 and peak < BOUND
