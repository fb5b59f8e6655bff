"""Configuration of destinations and of the delivery engine (sections of ``Settings``).

In the YAML config file:

    destinations:
      - name: shr
        kind: fhir
        base_url: https://shr.example.org/fhir
        auth: {type: bearer, secret_env: SHR_TOKEN}       # or secret_file: /run/secrets/shr
        filter:
          resource_types: [Patient, Observation]
          sources: [commcare-main]
          criteria: "Observation.status = 'final' or Patient.exists()"
          policy: {organizations: [Organization/district-a]}  # only data of Patients it shows
        retry: {initial_delay: 1m, max_delay: 2h, max_age: 30d}
        concurrency: 4
        batch_size: 1
    delivery:
      poll_interval: 0.5s

Credentials (``AuthConfig``, ``resolve_credentials``), durations and ``DeliveryConfigError``
are ``gateway.connectors.config``'s: connectors read them too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.connectors import AuthConfig, Duration

if TYPE_CHECKING:
    from gateway.search import DataPolicy
from gateway.delivery.alerts import AlertSettings
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.policy import RetryPolicy


class SubscriptionFilter(BaseModel):
    """Which changes a destination receives; empty lists mean 'all'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = Field((), description="source names, matched against meta.source")
    criteria: str | None = Field(None, description="FHIRPath; the resource matches when it is true")
    exclude_clients: tuple[str, ...] = Field(
        (),
        description="API clients whose writes this destination does not get back: the EMR that is this"
        " destination already holds what it wrote through the FHIR API (its Provenance names the client)",
    )
    policy: dict[str, Any] | None = Field(
        None, description="a client data policy (organizations, districts, patients): only data it shows is sent"
    )

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, policy: dict[str, Any] | None) -> dict[str, Any] | None:
        if policy is not None:
            from gateway.search import DataPolicy

            if DataPolicy.from_json(policy).deidentify:
                raise ValueError("deidentify is for API clients; a destination gets the data as stored")
        return policy

    def data_policy(self) -> DataPolicy | None:
        """The policy as the store applies it (None: no row limit)."""
        if self.policy is None:
            return None
        from gateway.search import DataPolicy

        return DataPolicy.from_json(self.policy)

    @field_validator("criteria")
    @classmethod
    def _check_criteria(cls, criteria: str | None) -> str | None:
        if criteria is not None:
            from gateway.fhir import FhirPathError

            try:
                # The syntax check runs in _compiled; the trial run catches what fhirpathpy
                # only notices when it evaluates (an undefined %variable).
                _compiled(criteria)({"resourceType": "Basic"}, None)
            except Exception as exc:  # fhirpathpy raises bare Exception on bad expressions
                raise FhirPathError(f"invalid FHIRPath criteria: {exc}") from exc
        return criteria

    def matches(self, resource_type: str, source: str | None, resource: Mapping[str, Any]) -> bool:
        """True if a change of ``resource`` (type, source system) is for this destination."""
        if self.resource_types and resource_type not in self.resource_types:
            return False
        if self.sources and not any(source_matches(name, source) for name in self.sources):
            return False
        if self.criteria is not None:
            result = _compiled(self.criteria)(resource, None)
            return bool(result) and all(item is not False for item in result)
        return True


def source_matches(name: str, source: str | None) -> bool:
    """True if ``meta.source`` names the configured source ``name`` (exactly, or as its last segment)."""
    if source is None:
        return False
    if source == name:
        return True
    return any(source.endswith(sep + name) for sep in ("/", "#", ":"))


@functools.lru_cache(maxsize=256)
def _compiled(expression: str) -> Callable[[Mapping[str, Any], Any], list[Any]]:
    # Compiled once per expression: parsing dominates FHIRPath evaluation cost. Imported
    # here so that reading settings without criteria never loads the FHIRPath parser.
    from gateway.fhir import compile_fhirpath

    return compile_fhirpath(expression)


class DestinationConfig(BaseModel):
    """One place records are delivered to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # ``subscriptions`` is never configured: the gateway adds it for topic-based subscriptions.
    kind: Literal["fhir", "webhook", "dhis2", "cht-api", "commcare-api", "client-registry", "subscriptions"]
    base_url: str = Field(pattern=r"^https?://")
    auth: AuthConfig | None = None
    filter: SubscriptionFilter = SubscriptionFilter()
    retry: RetryPolicy | None = Field(None, description="overrides delivery.retry for this destination")
    breaker: BreakerPolicy | None = Field(None, description="overrides delivery.breaker")
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight per worker process")
    batch_size: int = Field(1, ge=1, le=1000, description="jobs per connector call (DHIS2: 50-250)")
    timeout: Duration = Field(30.0, gt=0)
    coalesce: bool | None = Field(
        None, description="skip superseded versions; default: on for fhir/dhis2, off for webhook"
    )
    enabled: bool = True
    options: dict[str, Any] = Field({}, description="kind-specific settings (e.g. DHIS2 program ids)")

    @model_validator(mode="after")
    def _return_path_takes_tasks(self) -> DestinationConfig:
        # A referral return path sends outcomes of Tasks only: queue nothing else for it.
        if self.kind in ("cht-api", "commcare-api") and not self.filter.resource_types:
            object.__setattr__(self, "filter", self.filter.model_copy(update={"resource_types": ("Task",)}))
        return self

    @property
    def internal(self) -> bool:
        """The gateway's own destination (subscriptions): listed once its queue was used (has a cursor)."""
        return self.kind == "subscriptions"

    @property
    def coalesces(self) -> bool:
        """Whether only the latest version of a resource needs delivering."""
        return self.coalesce if self.coalesce is not None else self.kind not in ("webhook", "subscriptions")


class DeliverySettings(BaseModel):
    """Engine-wide delivery settings (the ``delivery:`` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    in_process_worker: bool = Field(True, description="gateway serve runs a worker (off: use gateway worker)")
    poll_interval: Duration = Field(0.5, gt=0, description="idle wait before looking for due jobs again")
    lease: Duration = Field(
        60.0,
        gt=0,
        description="a claimed job returns to the queue if its worker is silent this long;"
        " a worker sends nothing for a claim in its last quarter",
    )
    drain_timeout: Duration = Field(10.0, description="graceful shutdown: wait this long for in-flight jobs")
    heartbeat_interval: Duration = Field(
        10.0, gt=0, description="a worker records that it is alive this often; silent for 3 intervals: not live"
    )
    alerts: AlertSettings = Field(AlertSettings(), description="when to call the alert webhook")
    outbox_batch: int = Field(500, ge=1, le=10000)
    settle_batch: int = Field(500, ge=1, le=10000)

    def retry_for(self, destination: DestinationConfig) -> RetryPolicy:
        """The effective retry policy of ``destination``."""
        return destination.retry or self.retry

    def breaker_for(self, destination: DestinationConfig) -> BreakerPolicy:
        """The effective circuit-breaker policy of ``destination``."""
        return destination.breaker or self.breaker


class DeliverySections(BaseModel):
    """The ``destinations`` and ``delivery`` sections of a config."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    destinations: tuple[DestinationConfig, ...] = ()
    delivery: DeliverySettings = DeliverySettings()

    @model_validator(mode="after")
    def _unique_names(self) -> DeliverySections:
        names = [d.name for d in self.destinations]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
        if any(d.kind == "subscriptions" or d.name == "subscriptions" for d in self.destinations):
            raise ValueError("the subscriptions destination is the gateway's own (set subscriptions: instead)")
        return self
