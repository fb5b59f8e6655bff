"""The connector seam: what the delivery engine hands a destination, and what it gets back.

A connector turns delivery jobs into requests to one destination (a FHIR server, a
webhook, DHIS2) and reports one ``DeliveryOutcome`` per job. It never retries, sleeps,
dead-letters or reorders: the delivery engine owns all of that, using the outcome.

    class MyConnector:
        async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
            ...  # one outcome per job, same order as ``jobs``

        async def aclose(self) -> None:
            ...

Rules a connector follows:

* ``deliver`` receives 1..``batch_size`` jobs (the destination's configured batch size),
  at most one job per ordering key (patient compartment), so a batch may be sent as one
  request (DHIS2 tracker import, a FHIR batch Bundle) or as several.
* Transport errors and HTTP responses are turned into outcomes with
  ``gateway.connectors.classify.classify`` (one table for every connector); a connector
  may treat a few statuses as success first (e.g. 404 on DELETE).
* A bug (any other exception) is left to propagate: the engine dead-letters the jobs with
  the traceback instead of retrying forever.
* A job whose destination accepted some parts and refused others (DHIS2 aggregate
  imports answer per data value) may come back as ``Partial``: the job counts as
  delivered and each refused part becomes a dead letter of its own, whose payload is the
  job's resource narrowed to that part, so replaying it sends only that part.
* Writes must be idempotent (PUT to deterministic ids, conditional create on
  identifiers), because delivery is at-least-once: a job whose acknowledgement was lost
  (worker killed, destination answered after our timeout) is sent again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway import jsonio

JobOp = Literal["create", "update", "delete"]
_PART_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # part names end up in dead-letter ids and URLs


@dataclass(frozen=True, slots=True)
class Job:
    """One change of one resource, to be delivered to one destination."""

    id: str  # "{destination}:{seq}": deterministic, so re-enqueueing a change is a no-op
    destination: str
    seq: int  # change-feed sequence number: the order of delivery within ``key``
    resource_type: str
    resource_id: str
    version: int
    op: JobOp
    key: str  # ordering key, the patient compartment ("Patient/123") or the resource itself
    payload: bytes  # the FHIR JSON of this version; b"" for a delete
    source: str | None = None  # the source system that wrote it (``meta.source``), if known
    enqueued_at: float = 0.0  # epoch seconds when the outbox queued it
    attempts: int = 0  # delivery attempts already made (0 on the first try)
    backfill: bool = False  # written by a backfill: the queue claims it after live jobs (its lane)
    receipt: str = field(default="", compare=False)  # opaque queue lease token; connectors ignore it

    @property
    def ref(self) -> str:
        """The relative reference of the resource, e.g. ``Observation/abc``."""
        return f"{self.resource_type}/{self.resource_id}"

    def resource(self) -> dict[str, Any]:
        """The resource as a dict (empty for a delete)."""
        if not self.payload:
            return {}
        value = jsonio.loads(self.payload)
        if not isinstance(value, dict):
            raise ValueError(f"job {self.id}: payload is not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request kept with a dead letter (credentials removed)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: str  # decoded text, truncated to a bounded size


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """A response kept with a dead letter."""

    status: int
    headers: Mapping[str, str]
    body: str  # decoded text, truncated to a bounded size


@dataclass(frozen=True, slots=True)
class Success:
    """The destination accepted the job."""

    detail: str | None = None  # e.g. the id or Location the destination assigned


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try the job again later."""

    delay: float | None  # seconds the destination asked us to wait (Retry-After); None: policy backoff
    reason: str  # short machine code: "http_503", "timeout", "connection", ...
    throttle: bool = False  # the destination asked us to slow down (429/503 with Retry-After)
    # The link is fine and only this job must wait (e.g. for a record that has not arrived
    # yet), so the circuit breaker must not count it as the destination failing.
    link_ok: bool = False


@dataclass(frozen=True, slots=True)
class Permanent:
    """A failure retrying cannot fix: the job goes to the dead letters."""

    reason: str  # short machine code: "http_422", "internal_error", ...
    request: RecordedRequest | None = None
    response: RecordedResponse | None = None
    detail: str | None = None  # a traceback or an explanation for operators (never patient data)
    # The destination object the refusal is about (e.g. "EVENT/<uid>"): the dead jobs of one
    # group are one dead letter, replayed together, and later jobs refused for it join it.
    group: str | None = None


@dataclass(frozen=True, slots=True)
class RefusedPart:
    """One part of a job the destination refused while it accepted the others."""

    part: str  # names the part within its job ([A-Za-z0-9_-]); the dead letter is "<job id>.<part>"
    payload: bytes  # the job's resource narrowed to this part: what replaying the dead letter sends
    reason: str  # short machine code, as for ``Permanent``
    detail: str | None = None
    request: RecordedRequest | None = None
    response: RecordedResponse | None = None

    def __post_init__(self) -> None:
        if not _PART_NAME.match(self.part):
            raise ValueError(f"a part name is 1-64 letters, digits, - and _ (got {self.part!r})")


@dataclass(frozen=True, slots=True)
class Partial:
    """The destination accepted the job except ``refused``; each refused part is dead-lettered alone."""

    refused: tuple[RefusedPart, ...]
    detail: str | None = None  # what was accepted, for operators


DeliveryOutcome = Success | Retry | Permanent | Partial


class DigestStore(Protocol):
    """Per-destination digests of destination objects as the destination last accepted them."""

    async def accepted_digests(self, destination: str, names: Sequence[str]) -> dict[str, str]:
        """The recorded digest of each of ``names`` that has one."""
        ...

    async def record_digests(self, destination: str, digests: Mapping[str, str | None]) -> None:
        """Record digests of objects the destination accepted (None forgets one, e.g. deleted)."""
        ...


class Connector(Protocol):
    """Delivers jobs to one destination; see the module docstring for the rules."""

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """Send ``jobs`` and return one outcome per job, in the same order."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
