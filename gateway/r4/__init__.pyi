"""Typed surface of ``gateway.r4`` (loaded lazily by ``__init__.py``)."""

from .tables import load_table as load_table
from .types import R4_ONLY_TYPES as R4_ONLY_TYPES
from .types import RESOURCE_TYPES as RESOURCE_TYPES
