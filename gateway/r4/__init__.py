"""FHIR R4 (4.0.1) definitions as tables: resource types and the element table of the official schema.

The base every other package may read: it imports nothing from the gateway.
"""

from __future__ import annotations

from gateway.r4.types import RESOURCE_TYPES

__all__ = ["RESOURCE_TYPES"]
