"""Reliable delivery: outbox, durable queue (SQLite or Redis), workers, retries, dead letters.

The story, end to end: a committed write appends to the store's change feed; the
``Outbox`` turns changes into jobs per destination (``queue.enqueue`` moves its cursor
atomically with the jobs); a ``Worker`` claims head jobs per ordering key, calls the
destination's ``Connector`` and settles each outcome (ack, retry per ``RetryPolicy``,
dead letter); ``DeliveryAdmin`` shows and repairs it. ``DeliveryService`` wires it all.
"""

import lazy_loader

# The names below load on first use, so importing one submodule does not import the rest;
# ``__init__.pyi`` lists them for type checkers and is the one list to edit.
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
