"""Typed surface of ``gateway.connectors`` (loaded lazily by ``__init__.py``)."""

from .base import Connector as Connector
from .base import DeliveryOutcome as DeliveryOutcome
from .base import Job as Job
from .base import JobOp as JobOp
from .base import Partial as Partial
from .base import Permanent as Permanent
from .base import RecordedRequest as RecordedRequest
from .base import RecordedResponse as RecordedResponse
from .base import RefusedPart as RefusedPart
from .base import Retry as Retry
from .base import Success as Success
from .classify import Redaction as Redaction
from .classify import classify as classify
from .classify import format_traceback as format_traceback
from .classify import record_request as record_request
from .classify import record_response as record_response
from .config import AuthConfig as AuthConfig
from .config import Credentials as Credentials
from .config import DeliveryConfigError as DeliveryConfigError
from .config import Destination as Destination
from .config import Duration as Duration
from .config import parse_duration as parse_duration
from .config import resolve_credentials as resolve_credentials
from .fhir_server import FhirServerConnector as FhirServerConnector
from .http import exchange as exchange
from .webhook import WebhookConnector as WebhookConnector
