"""The ``gateway`` root command: ``serve``, ``clients``, ``config``, ``conformance``, and the groups
of the other modules of this package mounted under it.

Every command builds one ``Settings`` from the environment and an optional YAML file
(``--config`` or ``GATEWAY_CONFIG``) and hands it down (``gateway.cli.common``). A command
that stops on a gateway error exits with the code ``gateway.errors.DISPOSITIONS`` gives it.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import ConfigOption, fail, mask_url, settings_from
from gateway.cli.dhis2 import dhis2_app
from gateway.cli.mappings import mappings_app
from gateway.cli.quarantine import quarantine_app
from gateway.cli.queue import queue_app, worker_command
from gateway.cli.sandbox import sandbox_app
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.store import ClientRegistry

app = typer.Typer(help="FHIR interoperability gateway for community health programs.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
clients_app = typer.Typer(help="API clients and their tokens.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
conformance_app = typer.Typer(help="FHIR conformance checks.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(config_app, name="config")
app.add_typer(conformance_app, name="conformance")
app.add_typer(mappings_app, name="mappings")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(dhis2_app, name="dhis2")
app.add_typer(queue_app, name="queue")
app.command("worker", help="Run delivery workers as their own process.")(worker_command)

DEV_CONFIG = Path("deploy/dev.yaml")
SANDBOX_PORT = 8081


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default from settings)")] = None,
    dev_token: Annotated[bool, typer.Option("--dev-token", help="Print a fresh admin token for local use")] = False,
    dev: Annotated[
        bool,
        typer.Option("--dev", help=f"Local trial: {DEV_CONFIG} unless --config, the DHIS2 sandbox on :{SANDBOX_PORT}, "
                     "and a fresh admin token"),
    ] = False,
) -> None:
    """Run the gateway API (and its in-process services)."""
    import logging

    import uvicorn

    from gateway.api import create_app
    from gateway.services import ServicePlan, Services

    if dev and config is None and DEV_CONFIG.exists():
        config = DEV_CONFIG
    settings = settings_from(config, host=host, port=port)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = _start_dev_sandbox() if dev else None
    try:
        if dev or dev_token:
            with Services.build(settings, ServicePlan(ingest=False)) as services:
                _print_dev_token(services.store, settings)
        application = create_app(settings, plan=ServicePlan.for_serve(settings, os.environ))
        uvicorn.run(application, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                    proxy_headers=True, access_log=False)
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(10)


def _print_dev_token(store: ClientRegistry, settings: Settings) -> None:
    token = _create_client(store, "dev-admin", ["system/*.cruds", "admin", "ingest:*"])
    base = f"http://{settings.host}:{settings.port}"
    typer.echo("\nAdmin token for this run (scopes system/*.cruds admin ingest:*):\n")
    typer.echo(f"  {token}\n")
    typer.echo("Try it:\n")
    typer.echo(f'  curl -H "Authorization: Bearer {token}" {base}/fhir/Patient')
    if settings.sources:
        source = settings.sources[0].name
        typer.echo(f'  curl -H "Authorization: Bearer {token}" -H "Content-Type: application/json" \\')
        typer.echo(f"       --data @mappings/{settings.sources[0].mapping}/tests/<case>.input.json "
                   f"{base}/ingest/{source}")
    typer.echo("")


def _start_dev_sandbox() -> Any:
    """Start the DHIS2 sandbox as a child process and wait until it listens."""
    import socket
    import subprocess
    import time

    state = Path("var/dhis2-sandbox")
    state.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "gateway", "sandbox", "dhis2", "--port", str(SANDBOX_PORT),
                              "--state", str(state)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            fail(f"the DHIS2 sandbox did not start (is port {SANDBOX_PORT} taken?)")
        try:
            with socket.create_connection(("127.0.0.1", SANDBOX_PORT), timeout=0.5):
                return child
        except OSError:
            time.sleep(0.2)
    child.terminate()
    fail("the DHIS2 sandbox did not start within 30 s")


def _create_client(store: ClientRegistry, name: str, scopes: list[str]) -> str:
    from gateway.auth import hash_token, new_token
    from gateway.store import ApiClient

    token = new_token()
    store.save_client(ApiClient(name, tuple(scopes), datetime.now(UTC)), hash_token(token))
    return token


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="Client name (letters, digits, - and _)")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="A scope; repeat for more")],
    config: ConfigOption = None,
) -> None:
    """Create (or re-key) a client; its token is printed once, alone on the last line."""
    from gateway.auth import ScopeError, validate_scopes
    from gateway.services import ServicePlan, Services

    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        fail(f"invalid client name {name!r}: use letters, digits, - and _ (64 at most)")
    try:
        validate_scopes(scope)
    except ScopeError as exc:
        fail(str(exc), exit_code_for(exc))
    with Services.build(settings_from(config), ServicePlan(ingest=False)) as services:
        token = _create_client(services.store, name, scope)
    typer.echo(f"created client {name} with scopes {' '.join(scope)}; the token is shown only now:")
    typer.echo(token)


@clients_app.command("list")
def clients_list(config: ConfigOption = None) -> None:
    """List clients and their scopes (never tokens)."""
    from gateway.services import ServicePlan, Services

    with Services.build(settings_from(config), ServicePlan(ingest=False)) as services:
        for client in services.store.list_clients():
            state = " (disabled)" if client.disabled else ""
            typer.echo(f"{client.name}\t{' '.join(client.scopes)}{state}")


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration and print it with secrets masked."""
    import json

    settings = settings_from(config)
    data = settings.model_dump(mode="json", exclude={"config_file"})
    data["store_url"] = mask_url(settings.store_url)
    data["queue_url"] = mask_url(settings.queue_url)
    for destination, configured in zip(data["destinations"], settings.destinations, strict=True):
        destination["base_url"] = mask_url(configured.base_url)
    typer.echo(json.dumps(data, indent=2, default=str))
    typer.echo(f"configuration OK{f' ({config})' if config else ''}", err=True)


@conformance_app.command("run")
def conformance_run(
    base_url: Annotated[str, typer.Option(help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")],
    token: Annotated[str, typer.Option(help="Bearer token with system/*.cruds")],
    resource_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only these resource types (repeatable)")
    ] = None,
) -> None:
    """Check every interaction and search parameter a server advertises (exit 1 on failures, 2 if unreachable)."""
    from conformance.report import main as run_and_report

    raise typer.Exit(run_and_report(base_url.rstrip("/"), token, types=set(resource_type or []) or None))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="gateway")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
