"""Typed surface of ``gateway.fhir`` (loaded lazily by ``__init__.py``)."""
