"""Typed surface of ``gateway.search`` (loaded lazily by ``__init__.py``)."""
