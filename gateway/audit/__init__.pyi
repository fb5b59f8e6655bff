"""Typed surface of ``gateway.audit`` (loaded lazily by ``__init__.py``)."""

from .events import CLIENT_SYSTEM as CLIENT_SYSTEM
from .events import audit_event as audit_event
from .events import audit_index as audit_index
from .messages import MessageLogWriter as MessageLogWriter
from .record import AccessRecord as AccessRecord
from .record import patients_in as patients_in
from .settings import AuditSettings as AuditSettings
from .settings import MessageLogSettings as MessageLogSettings
from .writer import AuditWriter as AuditWriter
