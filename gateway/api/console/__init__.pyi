"""Typed surface of ``gateway.api.console`` (loaded lazily by ``__init__.py``)."""

from .mount import error_response as error_response
from .mount import install as install
from .mount import is_console as is_console
