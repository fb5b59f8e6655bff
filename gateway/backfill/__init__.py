"""Backfill: millions of historical records (JSON lines, JSON arrays, CommCare/ODK exports, CSV) from
files, directories or URLs, through the same ingest service as ``POST /ingest/{source}``, streamed
with bounded memory and resumable after a kill (the position of each input is saved in the store).

Usage::

    runner = BackfillRunner(services.ingest, services.store)
    for item in expand(["exports/"]):
        report = runner.run("odk", item)     # from the saved position; saved again batch by batch
"""

import lazy_loader

# The names below load on first use; ``__init__.pyi`` lists them and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
