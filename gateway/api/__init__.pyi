"""Typed surface of ``gateway.api`` (loaded lazily by ``__init__.py``)."""
from .access_log import configure_access_log as configure_access_log
from .app import create_app as create_app
