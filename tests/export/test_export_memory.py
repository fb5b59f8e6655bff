"""A large export keeps memory flat: the store is paged by row id and each page is written out
before the next is read. 20,000 resources of ~2 KB here (40 MB of NDJSON, more than the RSS
growth allowed below); ``bench/bulk_export.py`` runs 100,000 and reports the same measure.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gateway.api.app import create_app
from gateway.store import open_store
from tests.conftest import ApiHarness
from tests.export.helpers import kick_off, seed, wait_done
from tests.export.test_bulk_export import export_settings

RESOURCES = 20_000
FILLER = "x" * 1800  # a long note: each resource ~2 KB, so holding them all would show


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class Sampler:
    """RSS every few milliseconds on a thread, while the export runs."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _observation(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/p{i % 500}"}, "valueQuantity": {"value": i % 90, "unit": "kg"},
            "note": [{"text": FILLER}]}


async def test_a_large_export_keeps_memory_flat(pg_schema_url: str, tmp_path: Path) -> None:
    # On PostgreSQL the rows live in another process, so this process's RSS is the export's own
    # memory; SQLite's page cache (64 MB a connection, by design) would fill during any large read.
    url = pg_schema_url
    store = open_store(url)
    for start in range(0, RESOURCES, 2000):
        seed(store, [_observation(i) for i in range(start, start + 2000)])
    settings = export_settings(url, tmp_path, page_size=1000, max_file_resources=100_000)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        client = harness.with_scopes("system/*.rs")
        with Sampler() as sampler:
            manifest = await wait_done(client, await kick_off(client, _type="Observation"), timeout=120)
        await harness.aclose()
    store.close()
    assert sum(item["count"] for item in manifest["output"]) == RESOURCES
    written = sum(p.stat().st_size for p in (tmp_path / "exports").rglob("*.ndjson"))
    assert written > 35_000_000
    samples = sampler.samples
    assert len(samples) > 20
    # After the first tenth (the first pages, buffers, the parser warm), memory may not grow
    # with the rows: under 12 MB more while 40 MB of NDJSON pass through.
    settled = samples[len(samples) // 10]
    growth = max(samples) - settled
    print(f"RSS {settled / 1e6:.1f} MB after a tenth, growth {growth / 1e6:.1f} MB, {len(samples)} samples")
    assert growth < 12_000_000, f"RSS grew {growth / 1e6:.1f} MB during the export"


async def test_on_sqlite_the_python_heap_stays_flat(tmp_path: Path) -> None:
    # SQLite's page cache is C memory (bounded by cache_size); what the export itself holds is
    # Python objects, which tracemalloc sees: its peak stays far below the 40 MB exported.
    import tracemalloc

    url = f"sqlite:///{tmp_path}/big.db"
    store = open_store(url)
    for start in range(0, RESOURCES, 2000):
        seed(store, [_observation(i) for i in range(start, start + 2000)])
    settings = export_settings(url, tmp_path, page_size=1000, max_file_resources=100_000)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        client = harness.with_scopes("system/*.rs")
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            manifest = await wait_done(client, await kick_off(client, _type="Observation"), timeout=120)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await harness.aclose()
    store.close()
    assert sum(item["count"] for item in manifest["output"]) == RESOURCES
    print(f"Python heap peak {(peak - before) / 1e6:.1f} MB above its start")
    assert peak - before < 10_000_000, f"the Python heap peaked {(peak - before) / 1e6:.1f} MB above its start"
