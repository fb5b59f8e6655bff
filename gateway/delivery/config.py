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
        retry: {initial_delay: 1m, max_delay: 2h, max_age: 30d}
        concurrency: 4
        batch_size: 1
    delivery:
      poll_interval: 0.5s

The config names where a secret lives (an environment variable or a file), never the
secret itself. ``resolve_credentials`` reads it, from a mapping the CLI passes in
(``os.environ``): nothing in the package reads the environment on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.policy import Duration, RetryPolicy
from gateway.errors import ConfigError


class DeliveryConfigError(ConfigError):
    """A destination's configuration cannot be used (the message never holds a secret)."""


class AuthConfig(BaseModel):
    """Where a destination's credentials come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["bearer", "basic", "api_token"]
    username: str | None = Field(None, description="basic auth user name")
    secret_env: str | None = Field(None, description="name of the env var holding the token/password")
    secret_file: Path | None = Field(None, description="file holding the token/password")
    header: str = Field("Authorization", description="api_token: header carrying the token")
    scheme: str = Field("ApiToken", description="api_token: prefix before the token ('' for none)")

    @model_validator(mode="after")
    def _validate(self) -> AuthConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret_env and secret_file")
        if self.type == "basic" and not self.username:
            raise ValueError("basic auth needs a username")
        return self


class Credentials:
    """A destination's resolved credentials; the secret stays a ``SecretStr``."""

    def __init__(self, config: AuthConfig, secret: SecretStr) -> None:
        self.config = config
        self.secret = secret

    def __repr__(self) -> str:
        return f"Credentials(type={self.config.type!r}, secret='**********')"

    def httpx_auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` adding these credentials to every request."""
        value = self.secret.get_secret_value()
        if self.config.type == "basic":
            return httpx.BasicAuth(self.config.username or "", value)
        if self.config.type == "bearer":
            return _HeaderAuth("Authorization", f"Bearer {value}")
        prefix = f"{self.config.scheme} " if self.config.scheme else ""
        return _HeaderAuth(self.config.header, prefix + value)


class _HeaderAuth(httpx.Auth):
    def __init__(self, header: str, value: str) -> None:
        self._header = header
        self._value = value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._value
        yield request


def resolve_credentials(auth: AuthConfig, environ: Mapping[str, str]) -> Credentials:
    """Read the secret ``auth`` points at, from ``environ`` or a file."""
    if auth.secret_env is not None:
        value = environ.get(auth.secret_env)
        if not value:
            raise DeliveryConfigError(f"environment variable {auth.secret_env} is not set or empty")
    else:
        assert auth.secret_file is not None
        try:
            value = auth.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DeliveryConfigError(f"cannot read secret file {auth.secret_file}: {exc.strerror}") from exc
        if not value:
            raise DeliveryConfigError(f"secret file {auth.secret_file} is empty")
    return Credentials(auth, SecretStr(value))


class SubscriptionFilter(BaseModel):
    """Which changes a destination receives; empty lists mean 'all'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource_types: tuple[str, ...] = ()
    sources: tuple[str, ...] = Field((), description="source names, matched against meta.source")
    criteria: str | None = Field(None, description="FHIRPath; the resource matches when it is true")

    @model_validator(mode="after")
    def _compile(self) -> SubscriptionFilter:
        if self.criteria is not None:
            try:
                _compiled(self.criteria)({"resourceType": "Basic"}, None)
            except Exception as exc:  # fhirpathpy raises bare Exception on bad expressions
                raise ValueError(f"invalid FHIRPath criteria: {exc}") from exc
        return self

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
    # Compiled once per expression: parsing dominates FHIRPath evaluation cost.
    from fhirpathpy import compile as fhirpath_compile
    from fhirpathpy.models import models

    compiled: Callable[[Mapping[str, Any], Any], list[Any]] = fhirpath_compile(expression, models["r4"])
    return compiled


class DestinationConfig(BaseModel):
    """One place records are delivered to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: Literal["fhir", "webhook", "dhis2"]
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

    @property
    def coalesces(self) -> bool:
        """Whether only the latest version of a resource needs delivering."""
        return self.coalesce if self.coalesce is not None else self.kind != "webhook"


class DeliverySettings(BaseModel):
    """Engine-wide delivery settings (the ``delivery:`` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    in_process_worker: bool = Field(True, description="gateway serve runs a worker (off: use gateway worker)")
    poll_interval: Duration = Field(0.5, gt=0, description="idle wait before looking for due jobs again")
    lease: Duration = Field(
        60.0, gt=0, description="a claimed job returns to the queue if its worker is silent this long"
    )
    drain_timeout: Duration = Field(10.0, description="graceful shutdown: wait this long for in-flight jobs")
    outbox_batch: int = Field(500, ge=1, le=10000)
    settle_batch: int = Field(500, ge=1, le=10000)

    def retry_for(self, destination: DestinationConfig) -> RetryPolicy:
        """The effective retry policy of ``destination``."""
        return destination.retry or self.retry

    def breaker_for(self, destination: DestinationConfig) -> BreakerPolicy:
        """The effective circuit-breaker policy of ``destination``."""
        return destination.breaker or self.breaker
