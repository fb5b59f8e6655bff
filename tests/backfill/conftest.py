"""Backfill fixtures: an ingest service (shipped mappings) on each store backend, a backfill runner
on it, generated line-list records, and counts read back from the change feed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.backfill import BackfillRunner
from gateway.ingest import IngestService, MappingRegistry, SourceConfig
from gateway.search import QueryParser, default_registry
from gateway.store import ChangeOp, Store

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SOURCES = [
    SourceConfig(name="csv", kind="csv", mapping="csv"),
    SourceConfig(name="commcare", kind="commcare", mapping="commcare"),
    SourceConfig(name="odk", kind="odk", mapping="odk"),
]
HEADER = ["record_id", "visit_date", "chw_id", "village", "patient_id", "patient_name", "sex", "age_years", "fever",
          "rdt_result", "act_given", "referred", "referral_facility"]  # fmt: skip


def line_list(n: int) -> dict[str, str]:
    """Line-list row ``n`` of the csv mapping set (its own record and patient ids)."""
    values = [f"LL-{n:07d}", "2025-05-05", "CHW-0083", "Kibuli", f"KBL-P-{n:07d}", "Okello Brian", "male",
              str(n % 80), "yes", "positive", "yes", "no", ""]  # fmt: skip
    return dict(zip(HEADER, values, strict=True))


def write_jsonl(path: Path, count: int, start: int = 0) -> Path:
    """``count`` line-list rows as JSON lines."""
    with path.open("wb") as f:
        for n in range(start, start + count):
            f.write(orjson.dumps(line_list(n)) + b"\n")
    return path


def write_csv(path: Path, count: int, start: int = 0) -> Path:
    """``count`` line-list rows as CSV with a header line."""
    lines = [",".join(HEADER)] + [",".join(line_list(n).values()) for n in range(start, start + count)]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


def created(store: Store) -> Counter[str]:
    """Resources created per type, from the change feed (a duplicate would be a second version)."""
    return Counter(c.type for c in store.iter_changes(0) if c.op is ChangeOp.CREATE)


def rewritten(store: Store) -> int:
    """Change-feed entries that are not creations (updates, deletes)."""
    return sum(1 for c in store.iter_changes(0) if c.op is not ChangeOp.CREATE)


def held(store: Store, source: str) -> list[Any]:
    """The held quarantine entries of ``source``."""
    return store.quarantine_list(source=source, status="held", after=0, limit=1000)


class Backfill:
    """An ingest service on ``store`` and a backfill runner feeding it."""

    def __init__(self, store: Store, batch: int = 50) -> None:
        self.store = store
        parser = QueryParser(default_registry(), 20, 1000)
        self.ingest = IngestService(store, parser, MappingRegistry(MAPPINGS, SOURCES))
        self.runner = BackfillRunner(self.ingest, store, batch=batch)


@pytest.fixture
def backfill(store: Store) -> Iterator[Backfill]:
    """A backfill into a store of each backend, 50 records a batch."""
    harness = Backfill(store)
    yield harness
    harness.ingest.close()
