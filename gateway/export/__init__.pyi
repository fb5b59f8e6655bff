"""Typed surface of ``gateway.export`` (loaded lazily by ``__init__.py``)."""

from .kickoff import ExportRequest as ExportRequest
from .kickoff import parameters_items as parameters_items
from .kickoff import parse_kickoff as parse_kickoff
from .ndjson import NdjsonFiles as NdjsonFiles
from .profiles import load_profiles as load_profiles
from .runner import BulkExporter as BulkExporter
from .runner import export_dir as export_dir
from .runner import manifest as manifest
from .settings import BulkExportSettings as BulkExportSettings
