"""Typed surface of ``gateway.api`` (loaded lazily by ``__init__.py``)."""
from .app import create_app as create_app
