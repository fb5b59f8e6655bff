"""The audit trail: one AuditEvent per access, buffered in-process and written off the hot path.

Usage (the API's audit middleware and the composition root)::

    writer = AuditWriter(store, AuditSettings(), clock)
    await writer.start()                 # flushes every second or batch; purges by retention
    await writer.record(AccessRecord(...))
    await writer.stop()                  # flushes what is left
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
