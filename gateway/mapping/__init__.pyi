"""Typed surface of ``gateway.mapping`` (loaded lazily by ``__init__.py``)."""

from .engine import MAPPING_TAG_SYSTEM as MAPPING_TAG_SYSTEM
from .engine import CompiledMapping as CompiledMapping
from .engine import MappingSet as MappingSet
from .errors import LoadIssue as LoadIssue
from .errors import MappingError as MappingError
from .errors import MappingLoadError as MappingLoadError
from .errors import to_operation_outcome as to_operation_outcome
from .loader import LoadedMappings as LoadedMappings
from .loader import load_mapping_sets as load_mapping_sets
from .loader import load_mappings as load_mappings
from .loader import validate_mappings as validate_mappings
