"""Configuration connectors read: a destination's credentials, durations, and its shape.

A destination names where its secret lives (an environment variable or a file), never
the secret itself:

    auth: {type: bearer, secret_env: SHR_TOKEN}       # or secret_file: /run/secrets/shr

``resolve_credentials`` reads it, from a mapping the CLI passes in (``os.environ``):
nothing in the package reads the environment on its own. ``Destination`` is what a
connector reads of its destination's configuration; the delivery engine's
``DestinationConfig`` (which adds filters, retry and breaker policies) satisfies it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from gateway.connectors.classify import Redaction
from gateway.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string like ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"30d"``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h, 30d)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


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

    def redaction(self) -> Redaction:
        """What to remove from kept requests and answers: the header carrying the secret, and its values."""
        value = self.secret.get_secret_value()
        header = self.config.header if self.config.type == "api_token" else "Authorization"
        secrets = [value]
        if self.config.type == "basic":
            userinfo = f"{self.config.username or ''}:{value}".encode()
            secrets.append(base64.b64encode(userinfo).decode("ascii"))
        # Longest first, so a value containing another is replaced whole.
        return Redaction(frozenset({header.lower()}), tuple(sorted(set(secrets), key=len, reverse=True)))

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


class Destination(Protocol):
    """What a connector reads of its destination's configuration."""

    @property
    def name(self) -> str:
        """The destination's name (``[A-Za-z0-9_-]``, unique in a config)."""
        ...

    @property
    def base_url(self) -> str:
        """Where the destination is (http or https)."""
        ...

    @property
    def auth(self) -> AuthConfig | None:
        """Where its credentials come from, if it needs any."""
        ...

    @property
    def timeout(self) -> float:
        """Seconds a request may take."""
        ...

    @property
    def options(self) -> Mapping[str, Any]:
        """Kind-specific settings (e.g. DHIS2 program ids), validated by the connector."""
        ...
