"""What every command shares: the ``--config`` option, settings loading and one-line failures.

Exit codes: 0 success; 1 the command ran but found problems; 2 bad usage or
configuration, with a one-line reason on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import unquote_plus, urlsplit

import typer

from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from pydantic import ValidationError

    from gateway.settings import Settings

__all__ = ["ConfigOption", "describe_validation_error", "fail", "mask_url", "settings_from"]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="GATEWAY_CONFIG", help="YAML config file", dir_okay=False),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line reason on stderr and exit."""
    typer.echo(f"gateway: {message}", err=True)
    raise typer.Exit(code)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """Load settings or exit with a message naming the file, line or field."""
    from pydantic import ValidationError

    from gateway.settings import ConfigFileError, load_settings

    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigFileError as exc:
        fail(str(exc), exit_code_for(exc))
    except ValidationError as exc:
        fail(describe_validation_error(exc, config))


def describe_validation_error(exc: ValidationError, config: Path | None) -> str:
    """``store_url (GATEWAY_STORE_URL): must start with …`` for the first problem, plus a count."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    env = "GATEWAY_" + "__".join(str(p).upper() for p in first.get("loc", ()) if not isinstance(p, int))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    where = f" in {config}" if config else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid setting {field} ({env}){where}: {message}{more}"


# A query parameter whose name holds one of these carries a credential (``password``,
# ``sslpassword``, ``passwd``, ``pwd``, ``client_secret``, ``access_token``, ``apikey``, …).
# ``key`` also catches harmless ones like ``sslkey`` (a path): masking too much is cheap.
_SECRET_PARAM_PARTS = ("pass", "pwd", "secret", "token", "key")


def mask_url(url: str) -> str:
    """Hide the password in a URL's userinfo and the value of every password-like query parameter."""
    # Edited as text rather than re-assembled (urlunsplit turns sqlite:///x into sqlite:/x),
    # so everything that is not masked is shown as written.
    head, question, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    parts = urlsplit(url)
    if parts.password:
        head = head.replace(f":{parts.password}@", ":***@", 1)
    fields = []
    for field in query.split("&") if question else ():
        name, equals, _ = field.partition("=")
        if equals and any(part in unquote_plus(name).lower() for part in _SECRET_PARAM_PARTS):
            field = f"{name}=***"
        fields.append(field)
    return head + question + "&".join(fields) + hash_ + fragment
