"""Typed surface of ``gateway.connectors.openmrs`` (loaded lazily by ``__init__.py``)."""

from .config import OpenMrsOptions as OpenMrsOptions
from .connector import OpenMrsConnector as OpenMrsConnector
from .factory import create_connector as create_connector
from .factory import openmrs_factory as openmrs_factory
from .profile import OpenMrsProfile as OpenMrsProfile
from .profile import SiteStore as SiteStore
