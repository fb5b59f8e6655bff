"""Garbage-collector settings for a long-running gateway process.

Ingest allocates many short-lived containers per record (a mapped Bundle, its prepared
writes) and keeps hundreds of records' worth alive while a request's batches wait for their
commit. With CPython's default thresholds (a young collection every 700 net allocations)
the collector then walks the same surviving objects again and again: on the ingest
benchmark it took a quarter of the CPU time (``bench/ingest_bench.py``, 395 → 465
records/s at 1,000 records per request with the settings below). Nothing here turns the
collector off: cycles are still found, a little later.
"""

from __future__ import annotations

import gc

#: Net allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 50_000
#: Young collections per middle one, middle collections per full one (defaults 10 and 10).
OLDER_THRESHOLDS = (20, 10)


def settle_heap() -> None:
    """Freeze what start-up built and space out collections; call once, when start-up is done."""
    # The start-up heap (FHIR models, search registry, compiled mappings) lives as long as the
    # process: frozen, no later full collection walks it again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
