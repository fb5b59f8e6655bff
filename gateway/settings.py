"""The gateway's one configuration model.

Values come, highest priority first, from keyword arguments (tests), ``GATEWAY_*``
environment variables (nested sections with ``__``, e.g. ``GATEWAY_SEARCH__MAX_COUNT``),
an optional YAML file, and the defaults below. Nothing else in the package reads the
environment: the CLI builds a ``Settings`` and hands it down.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.audit import AuditSettings, MessageLogSettings
from gateway.connectors import DeliveryConfigError
from gateway.connectors.referral import ReferralSettings, ReturnOptions
from gateway.delivery import DeliverySections, DeliverySettings, DestinationConfig
from gateway.errors import ConfigError
from gateway.export import BulkExportSettings
from gateway.ingest import SourceConfig
from gateway.scheduler import SchedulerSettings
from gateway.search import DataPolicy, PolicyError
from gateway.store import check_store_url
from gateway.subscriptions import SubscriptionSettings

__all__ = [
    "AuditSettings",
    "ClientRateLimit",
    "ClientTimeoutSettings",
    "ConsoleSettings",
    "ConfigFileError",
    "MetricsSettings",
    "RateLimitSettings",
    "SearchSettings",
    "Settings",
    "SmartSettings",
    "SourceConfig",
    "DEV_CONFIG",
    "LOCAL_CONFIG",
    "LoginThrottleSettings",
    "find_config_file",
    "load_settings",
    "located_errors",
    "setting_error_in_file",
    "read_config_file",
]


class ConfigFileError(ConfigError):
    """The YAML config file cannot be read or parsed, or holds a FHIRPath that does not parse."""


class SearchSettings(BaseModel):
    """Paging and size limits for FHIR searches (a search past a size limit gets 400)."""

    default_count: int = Field(20, ge=1, le=1000)
    max_count: int = Field(1000, ge=1, le=10000)
    # The upper bounds keep the SQL of the largest allowed search within what SQLite and
    # PostgreSQL accept (expression depth, compound SELECT terms, bind parameters).
    max_values: int = Field(100, ge=1, le=200, description="values of one search parameter, and _sort keys")
    max_criteria: int = Field(30, ge=1, le=50, description="filtering parameters of one search")
    max_includes: int = Field(10, ge=0, le=50, description="distinct _include and _revinclude values of one search")
    max_included: int = Field(1000, ge=0, le=10000, description="resources included into one page")
    total_cap: int = Field(
        1000, ge=0, le=1_000_000,
        description="matches a search counts for Bundle.total unless it asks _total=accurate (or _summary=count,"
        " _count=0); with more matches the total is left out, so a search costs the same in a store of any size",
    )
    max_bundle_resources: int = Field(
        10_000, ge=1, le=1_000_000,
        description="resources the GET entries of one batch or transaction return together (matches and"
        " included; an entry finding nothing counts one); past it an entry is refused (400 too-costly)",
    )
    max_sort_keys: int = Field(
        5, ge=1, le=200,
        description="different _sort keys of one search (a repeated key is dropped); each costs one index probe"
        " per match, so past it a search is refused (400 too-costly)",
    )


class SmartSettings(BaseModel):
    """SMART Backend Services: the token endpoint (``POST /auth/token``) and the access tokens it issues."""

    access_token_seconds: int = Field(300, ge=30, le=3600, description="lifetime of an issued access token")
    token_url: str | None = Field(
        None,
        description="The token endpoint's URL as clients reach it (the audience of their assertions); default:"
        " the FHIR base URL with its last path segment replaced by auth/token",
    )

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class ClientTimeoutSettings(BaseModel):
    """How long ``gateway serve`` waits for a client's request to arrive (slowloris: clients that
    trickle a request, or send nothing, to hold connections open without a token)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    head_seconds: float = Field(
        20, gt=0, le=3600, description="a request's line and headers, from the connection's opening or its first byte",
    )
    body_seconds: float = Field(20, gt=0, le=3600, description="a request's body, from the end of its headers ...")
    body_min_rate: int = Field(
        500, ge=0, le=1_000_000_000, description="... plus a second for every this many bytes received; 0: no more",
    )


class ClientRateLimit(BaseModel):
    """One client's own rate limit; a field left out takes the section's default."""

    model_config = ConfigDict(extra="forbid")

    requests_per_second: float | None = Field(None, gt=0, le=1_000_000)
    burst: int | None = Field(None, ge=1, le=1_000_000)


class RateLimitSettings(BaseModel):
    """Per-client token buckets on every authenticated request (429 with Retry-After past them).

    The defaults are a ceiling for one client, far above what a partner system sends in normal
    operation and about what one gateway process serves: they keep a runaway script or a leaked
    token from taking the whole server, and leave bulk loads and load tests alone. Give
    partners their own, lower limits in ``clients``.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    requests_per_second: float = Field(1000.0, gt=0, le=1_000_000, description="sustained rate per client")
    burst: int = Field(5000, ge=1, le=1_000_000, description="requests a client may send at once")
    clients: dict[str, ClientRateLimit] = Field({}, description="limits of named clients (principal names)")
    redis_url: str | None = Field(
        None, description="redis://… to share each client's budget between gateway processes; default: in memory"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith(("redis://", "rediss://")):
                raise ValueError("must start with redis:// or rediss://")
            _require_extra("redis", "redis")
            urlsplit(value).port  # noqa: B018 (raises ValueError on a port that is not a number)
        return value


class LoginThrottleSettings(BaseModel):
    """Failed attempts at the credential endpoints (``POST /auth/token``, the console's login) before 429.

    Failures are counted in a window that opens with the first one; past ``max_failures`` from
    one client address, or ``max_client_failures`` naming one client at the token endpoint, an
    attempt gets 429 with Retry-After until the window closes. The counters are shared between
    processes where the rate limits' buckets are (``rate_limit.redis_url``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_failures: int = Field(20, ge=1, le=1_000_000, description="failed attempts from one client address")
    max_client_failures: int = Field(
        100, ge=1, le=1_000_000,
        description="failed token requests naming one client, from any address; higher than max_failures so"
        " one guessing address cannot lock a client out",
    )
    window_seconds: float = Field(300.0, gt=0, le=86_400, description="how long failures are counted")


class MetricsSettings(BaseModel):
    """Prometheus ``/metrics`` (the ``metrics:`` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    access: Literal["admin", "loopback", "public"] = Field(
        "admin",
        description="who may scrape: a token with the admin or metrics scope; or also any client on"
        " 127.0.0.1/::1 without a token; or anyone (behind a firewall only)",
    )
    multiprocess_dir: Path | None = Field(
        None,
        description="prometheus-client's PROMETHEUS_MULTIPROC_DIR: set it when several processes"
        " (uvicorn workers, gateway worker) are scraped as one; empty it before they start",
    )


def _require_extra(module: str, extra: str) -> None:
    """Refuse a URL whose driver is an optional dependency that is not installed, naming the extra."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        raise ValueError(f"needs the {extra} extra: pip install 'chw-fhir-gateway[{extra}]'")


class ConsoleSettings(BaseModel):
    """The operator console at ``/console`` (admin clients log in with their token)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    session_key: SecretStr | None = Field(
        None,
        description="Key signing console session cookies (32+ characters); give every gateway process the same"
        " one. Default: a random key per process (sessions end when it restarts)",
    )
    session_hours: float = Field(8.0, gt=0, le=24 * 30, description="how long a console login lasts")
    secure_cookie: bool | None = Field(
        None, description="Mark the session cookie Secure; default: when the request came over https"
        " (or public_base_url is https)"
    )

    @field_validator("session_key")
    @classmethod
    def _session_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class IdentitySettings(BaseModel):
    """Patient matching (README "Identity")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="match every Patient written and answer Patient/$match")
    rules_dir: Path | None = Field(
        None, description="directory holding the one identity rule file; default: <mappings_dir>/identity"
    )


class Settings(BaseSettings):
    """Effective configuration of one gateway process."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    store_url: str = Field("sqlite:///gateway.db", description="sqlite:///path or postgresql://…")
    queue_url: str = Field("sqlite:///gateway-queue.db", description="sqlite:///path or redis://…")
    queue_prefix: str = Field(
        "gw:dq", pattern=r"^[A-Za-z0-9:_-]{1,64}$",
        description="Redis queue: prefix of its keys, so several gateways can share one Redis",
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_base_url: str | None = Field(
        None, description="Base URL clients use (e.g. behind a proxy); default: from the request"
    )
    allowed_hosts: list[str] = Field(
        ["localhost", "127.0.0.1", "[::1]"],
        description="Host header values (name, or name:port) links may be built from when public_base_url is unset",
    )
    api_docs: bool = Field(
        False, description="Serve /openapi.json, /docs and /redoc (to authenticated clients only)"
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(64, ge=8, le=1000)
    gzip_min_bytes: int | None = Field(
        1024, ge=1, description="gzip answers of at least this many bytes to clients that accept it; null: never"
    )
    search: SearchSettings = SearchSettings()
    smart: SmartSettings = SmartSettings()
    mappings_dir: Path = Path("mappings")
    sources: list[SourceConfig] = []
    destinations: list[DestinationConfig] = []
    delivery: DeliverySettings = DeliverySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    login_throttle: LoginThrottleSettings = LoginThrottleSettings()
    client_timeouts: ClientTimeoutSettings = ClientTimeoutSettings()
    metrics: MetricsSettings = MetricsSettings()
    access_log: bool = Field(True, description="one JSON line per HTTP request on the gateway.access logger")
    audit: AuditSettings = AuditSettings()
    message_log: MessageLogSettings = MessageLogSettings()
    console: ConsoleSettings = ConsoleSettings()
    bulk_export: BulkExportSettings = BulkExportSettings()
    identity: IdentitySettings = IdentitySettings()
    referral: ReferralSettings = Field(
        ReferralSettings(), description="referral Tasks nobody acted on: when they become overdue"
    )
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: `time LEVEL logger: message` lines; json: one JSON object a line"
    )
    admin_token: SecretStr | None = Field(
        None, description="Optional static bootstrap token with every scope (for automation)"
    )
    client_policies: dict[str, dict[str, Any]] = Field(
        {},
        description="data policy per API client name (organizations, districts, patients, deidentify);"
        " overrides one set with `gateway clients set-policy`",
    )
    config_file: Path | None = Field(None, exclude=True)

    @field_validator("sources", "destinations")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [item.name for item in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @field_validator("destinations")
    @classmethod
    def _destination_options(cls, value: list[DestinationConfig]) -> list[DestinationConfig]:
        # Checked here so `gateway config check` names a bad DHIS2, OpenMRS, client registry
        # or referral return-path option (e.g. a schedule interval, a type OpenMRS cannot upsert) instead of
        # the first delivery failing on it.
        for destination in value:
            model: type[BaseModel] | None = None
            if destination.kind == "dhis2":
                from gateway.connectors.dhis2 import Dhis2Options

                model = Dhis2Options
            elif destination.kind == "client-registry":
                from gateway.connectors.client_registry import ClientRegistryOptions

                model = ClientRegistryOptions
            elif destination.kind in ("cht-api", "commcare-api"):
                model = ReturnOptions
            elif destination.kind == "fhir" and destination.options.get("profile") == "openmrs":
                from gateway.connectors.openmrs import OpenMrsOptions

                model = OpenMrsOptions
            if model is None:
                continue
            try:
                model.model_validate(destination.options)
            except ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                where = ".".join(str(p) for p in first.get("loc", ()))
                raise ValueError(
                    f"destination {destination.name}: options.{where}: {first.get('msg', 'invalid')}"
                ) from None
        return value

    @field_validator("sources")
    @classmethod
    def _pull_options(cls, value: list[SourceConfig]) -> list[SourceConfig]:
        # Checked here so `gateway config check` names a bad pull: option, not the first pull.
        pulled = [s for s in value if s.pull is not None]
        if pulled:
            from gateway.pull import pull_options

            for source in pulled:
                assert source.pull is not None
                try:
                    pull_options(source.kind, source.pull)
                except ValidationError as exc:
                    first = exc.errors(include_url=False, include_input=False)[0]
                    where = ".".join(str(p) for p in first.get("loc", ()))
                    raise ValueError(f"source {source.name}: pull.{where}: {first.get('msg', 'invalid')}") from None
                except ValueError as exc:
                    raise ValueError(f"source {source.name}: {exc}") from None
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        if not value.startswith("sqlite:///"):
            _require_extra("psycopg_pool", "postgres")
        check_store_url(value)  # ?schema=, ?pool_timeout=, ?synchronous=: refused here, not when a store opens
        return value

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("must start with sqlite:/// or redis://")
        if not value.startswith("sqlite:///"):
            _require_extra("redis", "redis")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.strip().lower() for host in value]
        if any(not host or "/" in host or "*" in host for host in hosts):
            raise ValueError("each entry is a host name or host:port, without scheme, path or wildcard")
        return hosts

    @field_validator("client_policies")
    @classmethod
    def _client_policies(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, policy in value.items():
            try:
                DataPolicy.from_json(policy)
            except PolicyError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    def data_policies(self) -> dict[str, DataPolicy]:
        """The configured data policy of each named client."""
        return {name: DataPolicy.from_json(policy) for name, policy in self.client_policies.items()}

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("must be at least 24 characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls, _file_values.get({})))


class _FileSource(PydanticBaseSettingsSource):
    """Values from the YAML config file, below the environment in priority."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


_file_values: ContextVar[dict[str, Any]] = ContextVar("gateway_config_file_values")


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, naming file and line on errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{where}: invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}:1: the top level must be a mapping of setting names")
    return data


DEV_CONFIG = Path("deploy/dev.yaml")
LOCAL_CONFIG = Path("gateway.yaml")


def find_config_file(
    explicit: Path | None, *, dev: bool = False, environ: Mapping[str, str], cwd: Path | None = None
) -> Path | None:
    """The YAML file a command reads: ``--config``, ``--dev``, ``GATEWAY_CONFIG`` or ``./gateway.yaml``, first found.

    None when there is none (the defaults and ``GATEWAY_*`` variables alone). ``dev`` names
    ``deploy/dev.yaml`` (what ``make run`` uses); a missing dev file is a configuration error.
    """
    if explicit is not None:
        return explicit
    where = cwd or Path()
    if dev:
        if not (where / DEV_CONFIG).is_file():
            raise ConfigFileError(f"--dev: {DEV_CONFIG} not found in {where.resolve()} (run from the checkout)")
        return DEV_CONFIG
    named = environ.get("GATEWAY_CONFIG", "").strip()
    if named:
        return Path(named)
    if (where / LOCAL_CONFIG).is_file():
        return LOCAL_CONFIG
    return None


def load_settings(
    config_file: Path | None = None, *, file_values: dict[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Build settings from env and an optional YAML file (env wins over the file).

    ``file_values`` is what ``read_config_file(config_file)`` returned, when the caller read it already.
    """
    if file_values is None:
        file_values = read_config_file(config_file) if config_file is not None else {}
    token = _file_values.set(file_values)
    try:
        return Settings(**overrides, config_file=config_file)
    except ValidationError as exc:
        located = fhirpath_error_in_file(exc, config_file, file_values) if config_file is not None else None
        if located is None:
            raise
        raise ConfigFileError(located) from exc
    finally:
        _file_values.reset(token)


def fhirpath_error_in_file(exc: ValidationError, path: Path, values: Mapping[str, Any]) -> str | None:
    """``file:line: setting: reason`` if the first error of ``exc`` is an invalid FHIRPath read from ``path``.

    ``values`` is what ``read_config_file`` read from ``path``: a value the environment
    or a keyword argument supplied instead has no place in the file.
    """
    # Imported on this error path only. The settings reader has no line numbers (it keeps
    # PyYAML's plain safe_load), so the file is read again with the mapping loader's
    # line-keeping reader.
    from gateway.fhir import FhirPathError

    first = exc.errors(include_url=False)[0]
    if not isinstance(first.get("ctx", {}).get("error"), FhirPathError):
        return None
    return setting_error_in_file(exc, path, values)


def setting_error_in_file(exc: ValidationError, path: Path, values: Mapping[str, Any]) -> str | None:
    """``file:line: setting: reason`` if the first error of ``exc`` is about a value ``path`` wrote.

    ``values`` as in ``fhirpath_error_in_file``; ``None`` when the value came from elsewhere
    (the environment, a keyword argument) or the setting is missing rather than wrong.
    """
    from gateway.mapping import YamlSyntaxError, format_path, read_yaml

    first = exc.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    if not loc or _value_at(values, loc) != first["input"]:
        return None
    try:
        doc = read_yaml(path)
        where = f"{path}:{doc.line_of(doc.data_path(loc))}"
    except YamlSyntaxError:  # stricter than the settings reader (duplicate keys): no line then
        where = str(path)
    return f"{where}: {format_path(loc)}: {str(first['msg']).removeprefix('Value error, ')}"


def located_errors(exc: ValidationError, path: Path, values: Mapping[str, Any]) -> list[str]:
    """Every error of ``exc`` as ``file:line: setting: reason``; one of a setting ``path`` does not
    write (the environment set it) as ``setting (GATEWAY_…): reason``. ``values`` as in ``fhirpath_error_in_file``."""
    from gateway.mapping import YamlSyntaxError, format_path, read_yaml

    try:
        doc = read_yaml(path)
    except YamlSyntaxError:  # stricter than the settings reader (duplicate keys): no lines then
        doc = None
    found: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        reason = str(error["msg"]).removeprefix("Value error, ")
        if loc and loc[0] in values:  # the file wrote this setting (a missing field: the line of its parent)
            where = f"{path}:{doc.line_of(doc.data_path(loc))}" if doc is not None else str(path)
            found.append(f"{where}: {format_path(loc)}: {reason}")
        else:
            env = "GATEWAY_" + "__".join(str(p).upper() for p in loc[:1])
            found.append(f"{format_path(loc) or 'settings'} ({env}): {reason}")
    return found


def _value_at(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return _MISSING
    return data


_MISSING = object()


def delivery_sections(settings: Settings, destinations_file: Path | None = None) -> DeliverySections:
    """The delivery sections from ``destinations_file`` if given, else from ``settings``."""
    if destinations_file is not None:
        data = read_config_file(destinations_file)
    else:
        data = {
            "destinations": settings.destinations,
            "delivery": settings.delivery,
        }
    try:
        return TypeAdapter(DeliverySections).validate_python(data, from_attributes=True)
    except ValidationError as exc:
        if destinations_file is not None:
            located = fhirpath_error_in_file(exc, destinations_file, data)
            if located is not None:
                raise DeliveryConfigError(located) from exc
        where = f" in {destinations_file}" if destinations_file else ""
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in first.get("loc", ()))
        raise DeliveryConfigError(f"{path}{where}: {first.get('msg', 'invalid')}") from exc
