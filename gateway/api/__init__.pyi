"""Typed surface of ``gateway.api`` (loaded lazily by ``__init__.py``)."""
