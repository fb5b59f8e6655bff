"""FHIR Bulk Data export (``$export``): kick-off parameters, de-identification profiles and the
jobs that stream the store into NDJSON files on a background thread.

Usage (the composition root and ``gateway.api.bulk_export``)::

    exporter = BulkExporter(store, settings.bulk_export)
    await exporter.start()                       # fails jobs a restart interrupted, purges expired ones
    request = parse_kickoff(params, level=..., access=..., parser=..., profiles=exporter.profiles)
    job = exporter.submit(client, url, request)  # 429 past max_concurrent_jobs
    await exporter.stop()                        # running jobs end as failed ("the server stopped")
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
