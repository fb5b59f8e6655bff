"""Pull connectors: records read from the APIs of sources that do not push (ODK Central OData,
CommCare Form/Case APIs, the CHT CouchDB ``_changes`` feed, KoboToolbox's data endpoint), fed
through the same ingest service as ``POST /ingest/{source}``.

Usage::

    runner = PullRunner(services.ingest, services.store, environ=os.environ)
    report = await runner.pull("odk")          # from the saved cursor; saved again page by page
    tasks = pull_tasks(runner)                 # one PeriodicTask per pulled source
"""

import lazy_loader

# The names below load on first use; ``__init__.pyi`` lists them and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
