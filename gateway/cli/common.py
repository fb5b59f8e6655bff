"""What every command shares: the ``--config``/``--dev`` options, settings loading and one-line failures.

Every command finds its configuration the same way (``gateway.settings.find_config_file``):
``--config FILE``, else ``--dev`` (``deploy/dev.yaml``, what ``make run`` uses), else
``GATEWAY_CONFIG``, else ``./gateway.yaml``, else the defaults and ``GATEWAY_*`` variables.

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
    from rich.console import Console

    from gateway.settings import Settings

__all__ = [
    "ConfigOption",
    "DevOption",
    "check_port_free",
    "console",
    "config_file",
    "describe_validation_error",
    "fail",
    "mask_url",
    "settings_from",
    "where",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $GATEWAY_CONFIG, else ./gateway.yaml)",
                 dir_okay=False),
]
DevOption = Annotated[
    bool, typer.Option("--dev", help="Use the dev configuration, deploy/dev.yaml (what `make run` uses)")
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line reason on stderr and exit."""
    typer.echo(f"gateway: {message}", err=True)
    raise typer.Exit(code)


def check_port_free(host: str, port: int, *, what: str = "", advice: str = "choose another --port") -> None:
    """Exit (2) naming the address when it cannot be listened on.

    uvicorn binds only after the app has started (for ``gateway serve`` the delivery worker and
    the scheduler; with --dev the sandbox and the demo records), then stops it all again and
    exits 3; ``what`` names the server when it is not the gateway (``the DHIS2 sandbox``).
    """
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            taken = f" (another process listens there: stop it, or {advice})"
            fail(f"{what + ' ' if what else ''}cannot listen on {host}:{port}: {exc.strerror or exc}"
                 + (taken if exc.errno == errno.EADDRINUSE else ""))


def console() -> Console:
    """A rich console for tables: the terminal's width, or unlimited when stdout is a pipe or file."""
    import sys

    from rich.console import Console

    # Rich assumes 80 columns off a terminal, which cuts names and ids in `… | grep` and logs.
    return Console() if sys.stdout.isatty() else Console(width=100_000)


def config_file(config: Path | None, dev: bool = False) -> Path | None:
    """The configuration file a command reads (see the module docstring), or exit if ``--dev`` has none."""
    import os

    from gateway.settings import ConfigFileError, find_config_file

    try:
        return find_config_file(config, dev=dev, environ=os.environ)
    except ConfigFileError as exc:
        fail(str(exc), exit_code_for(exc))


def settings_from(config: Path | None, dev: bool = False, **overrides: Any) -> Settings:
    """Load settings (found as ``config_file`` says) or exit with a message naming the file, line or field."""
    from pydantic import ValidationError

    from gateway.settings import ConfigFileError, load_settings

    config = config_file(config, dev)
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigFileError as exc:
        fail(str(exc), exit_code_for(exc))
    except ValidationError as exc:
        fail(describe_validation_error(exc, config))


def describe_validation_error(exc: ValidationError, config: Path | None) -> str:
    """Every invalid setting, a line each: ``file:line: search.max_count: reason`` where the file
    wrote the bad value, else ``store_url (GATEWAY_STORE_URL): …`` naming the setting."""
    from gateway.settings import ConfigFileError, located_errors, read_config_file, setting_error_in_file

    errors = exc.errors(include_url=False, include_input=False)
    values = None
    if config is not None:
        try:
            values = read_config_file(config)
        except ConfigFileError:
            values = None
    others = located_errors(exc, config, values)[1:] if config is not None and values is not None else [
        _unlocated(error, config, values) for error in errors[1:]
    ]
    located = setting_error_in_file(exc, config, values) if config is not None and values is not None else None
    return "\n".join([located or _unlocated(errors[0], config, values), *others])


def _unlocated(error: Any, config: Path | None, values: Any = None) -> str:
    """``invalid setting store_url (GATEWAY_STORE_URL): …``: an error no line of the file holds."""
    loc = tuple(error.get("loc", ()))
    field = ".".join(str(p) for p in loc)
    # The variable of the top-level setting: a list (sources, destinations) is set whole.
    env = "GATEWAY_" + "__".join(str(p).upper() for p in _env_path(loc))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    # A setting the file does not write came from the environment: naming the file sends the
    # reader to look for a value that is not there.
    from_file = config is not None and (values is None or (bool(loc) and loc[0] in values))
    where = f" in {config}" if from_file else ""
    return f"invalid setting {field} ({env}){where}: {message}"


def _env_path(loc: Any) -> list[Any]:
    path: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            break
        path.append(part)
    return path


def where(settings: Settings) -> str:
    """Which configuration, store and queue a command used, for a note when it found nothing."""
    source = (
        str(settings.config_file)
        if settings.config_file is not None
        else "none (no --config, GATEWAY_CONFIG or ./gateway.yaml; `--dev` for the one `make run` uses)"
    )
    return f"configuration {source}; store {mask_url(settings.store_url)}; queue {mask_url(settings.queue_url)}"


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
