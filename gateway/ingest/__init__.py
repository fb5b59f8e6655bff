"""Ingest of community-care records: map, validate, store, and quarantine what fails.

Usage (what ``POST /ingest/{source}`` does)::

    records = split_body(body, content_type, max_depth=64, max_records=1000)
    report = service.ingest("cht", records)   # IngestReport, one RecordResult per record
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
