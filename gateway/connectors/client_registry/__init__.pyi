"""Typed surface of ``gateway.connectors.client_registry`` (loaded lazily by ``__init__.py``)."""

from .config import ClientRegistryOptions as ClientRegistryOptions
from .connector import ClientRegistryConnector as ClientRegistryConnector
from .factory import client_registry_factory as client_registry_factory
from .factory import create_connector as create_connector
