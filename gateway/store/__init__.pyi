"""Typed surface of ``gateway.store`` (loaded lazily by ``__init__.py``)."""

from .base import AccessToken as AccessToken
from .base import ApiClient as ApiClient
from .base import AuditTrail as AuditTrail
from .base import Change as Change
from .base import ChangeFeed as ChangeFeed
from .base import ChangeOp as ChangeOp
from .base import ClientRegistry as ClientRegistry
from .base import LoggedMessage as LoggedMessage
from .base import MessageEntry as MessageEntry
from .base import MessageFilter as MessageFilter
from .base import MessageLog as MessageLog
from .base import PreparedWrite as PreparedWrite
from .base import QuarantinedRecord as QuarantinedRecord
from .base import QuarantineStore as QuarantineStore
from .base import RecordOutput as RecordOutput
from .base import ResourceStore as ResourceStore
from .base import RunClaims as RunClaims
from .base import SearchResult as SearchResult
from .base import Store as Store
from .base import StoredResource as StoredResource
from .base import StoreTransaction as StoreTransaction
from .base import VersionConflict as VersionConflict
from .base import WriteResult as WriteResult
from .open import open_store as open_store
from .rows import KEPT_IDENTIFIER_TYPE as KEPT_IDENTIFIER_TYPE
from .sql import SqlStore as SqlStore
