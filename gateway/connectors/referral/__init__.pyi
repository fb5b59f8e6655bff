"""Typed surface of ``gateway.connectors.referral`` (loaded lazily by ``__init__.py``)."""

from .config import RETURN_KINDS as RETURN_KINDS
from .config import ReturnOptions as ReturnOptions
from .connector import ChtConnector as ChtConnector
from .connector import CommCareConnector as CommCareConnector
from .context import outcome_context as outcome_context
from .factory import return_factories as return_factories
from .xform import to_xform as to_xform
