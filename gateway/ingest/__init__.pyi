"""Typed surface of ``gateway.ingest`` (loaded lazily by ``__init__.py``)."""

from .body import CSV as CSV
from .body import JSON as JSON
from .body import ReceivedRecord as ReceivedRecord
from .body import csv_row_bytes as csv_row_bytes
from .body import split_body as split_body
from .config import PULL_KINDS as PULL_KINDS
from .config import SourceConfig as SourceConfig
from .registry import IngestConfigError as IngestConfigError
from .registry import MappingConfig as MappingConfig
from .registry import MappingRegistry as MappingRegistry
from .registry import SourceLocator as SourceLocator
from .registry import compile_config as compile_config
from .service import IngestReport as IngestReport
from .service import IngestService as IngestService
from .service import RecordResult as RecordResult
from .service import WrittenResource as WrittenResource
