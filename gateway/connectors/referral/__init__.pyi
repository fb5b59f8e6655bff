"""Typed surface of ``gateway.connectors.referral`` (loaded lazily by ``__init__.py``)."""

from .config import RETURN_KINDS as RETURN_KINDS
from .config import ReferralSettings as ReferralSettings
from .config import ReturnOptions as ReturnOptions
from .connector import ChtConnector as ChtConnector
from .connector import CommCareConnector as CommCareConnector
from .context import outcome_context as outcome_context
from .factory import return_factories as return_factories
from .overdue import OVERDUE as OVERDUE
from .overdue import REFERRAL_STATUS_SYSTEM as REFERRAL_STATUS_SYSTEM
from .overdue import due_at as due_at
from .overdue import mark_overdue as mark_overdue
from .overdue import overdue_task as overdue_task
from .xform import to_xform as to_xform
