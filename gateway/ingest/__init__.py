"""Ingest of community-care records: map, validate, store, and quarantine what fails.

Usage (what ``POST /ingest/{source}`` does)::

    records = split_body(body, content_type, max_depth=64, max_records=1000)
    report = service.ingest("cht", records)   # IngestReport, one RecordResult per record
"""

from __future__ import annotations

from gateway.ingest.body import ReceivedRecord, split_body
from gateway.ingest.registry import IngestConfigError, MappingRegistry
from gateway.ingest.service import IngestReport, IngestService, RecordResult, WrittenResource

__all__ = [
    "IngestConfigError",
    "IngestReport",
    "IngestService",
    "MappingRegistry",
    "ReceivedRecord",
    "RecordResult",
    "WrittenResource",
    "split_body",
]
