"""The mapping engine: declarative YAML mappings turn community-care records into FHIR.

Usage::

    sets = load_mapping_sets(Path("mappings"))          # compiled once, at start-up
    bundle = sets["cht"].map_record(record)             # a FHIR transaction Bundle (dict)

``MappingError`` (bad record) and ``MappingLoadError`` (bad mapping files) are the only
errors callers need to handle; see ``errors.py``.
"""

from __future__ import annotations

from gateway.mapping.engine import MAPPING_TAG_SYSTEM, CompiledMapping, MappingSet
from gateway.mapping.errors import LoadIssue, MappingError, MappingLoadError, to_operation_outcome
from gateway.mapping.loader import LoadedMappings, load_mapping_sets, load_mappings, validate_mappings

__all__ = [
    "MAPPING_TAG_SYSTEM",
    "CompiledMapping",
    "LoadIssue",
    "LoadedMappings",
    "MappingError",
    "MappingLoadError",
    "MappingSet",
    "load_mapping_sets",
    "load_mappings",
    "to_operation_outcome",
    "validate_mappings",
]
