"""The ``gateway`` root command: ``serve``, ``clients``, ``config``, ``conformance``, and the groups
of the other modules of this package mounted under it.

Every command builds one ``Settings`` from the environment and an optional YAML file
(``--config`` or ``GATEWAY_CONFIG``) and hands it down (``gateway.cli.common``). A command
that stops on a gateway error exits with the code ``gateway.errors.DISPOSITIONS`` gives it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.backfill import backfill_command
from gateway.cli.common import (
    ConfigOption,
    DevOption,
    check_port_free,
    console,
    fail,
    mask_url,
    settings_from,
    where,
)
from gateway.cli.dhis2 import dhis2_app
from gateway.cli.identity import identity_app
from gateway.cli.mappings import mappings_app
from gateway.cli.quarantine import quarantine_app
from gateway.cli.queue import queue_app, worker_command
from gateway.cli.referrals import referrals_app
from gateway.cli.sandbox import sandbox_app
from gateway.cli.sources import sources_app
from gateway.cli.subscriptions import subscriptions_app
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.store import ClientRegistry

app = typer.Typer(help="FHIR interoperability gateway for community health programs.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
clients_app = typer.Typer(help="API clients and their tokens.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
conformance_app = typer.Typer(help="FHIR conformance checks.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"gateway {version('chw-fhir-gateway')}")
        except PackageNotFoundError:  # running from a checkout that was never installed
            typer.echo("gateway (version unknown: the package is not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit")] = False,
) -> None:
    """FHIR interoperability gateway for community health programs."""


app.add_typer(clients_app, name="clients")
app.add_typer(config_app, name="config")
app.add_typer(conformance_app, name="conformance")
app.add_typer(identity_app, name="identity")
app.add_typer(mappings_app, name="mappings")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(referrals_app, name="referrals")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(sources_app, name="sources")
app.add_typer(dhis2_app, name="dhis2")
app.add_typer(queue_app, name="queue")
app.add_typer(subscriptions_app, name="subscriptions")
app.command("worker", help="Run delivery workers (and the scheduled pulls) as their own process. SIGHUP reloads"
            " the configuration file's sources and their pull schedules.")(worker_command)
app.command("backfill", help="Backfill historical records into a source: streamed, resumable, in parallel.")(
    backfill_command
)


_SERVE_HELP = (
    "Run the gateway API (and its in-process services).\n\n"
    "SIGHUP (or POST /admin/reload) reloads the configuration file's sources, the mapping sets and the pull"
    " schedules without a restart; when anything is invalid nothing changes and every problem is logged"
    " with file:line. Other settings (store, queue, host, port, destinations, ...) need a restart. With"
    " --workers every worker process reloads."
)


@app.command(help=_SERVE_HELP)
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default from settings)")] = None,
    dev_token: Annotated[bool, typer.Option("--dev-token", help="Print a fresh admin token for local use")] = False,
    dev: Annotated[
        bool,
        typer.Option("--dev", help="Local trial: deploy/dev.yaml unless --config, the DHIS2 sandbox it delivers to, "
                     "the demo records of deploy/demo/, a fresh admin token and a walkthrough"),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="API processes (more than 1 needs a PostgreSQL store)"),
    ] = 1,
) -> None:
    """Run the gateway API (and its in-process services); SIGHUP reloads the sources (``_SERVE_HELP``)."""
    import logging

    from gateway.api import create_app
    from gateway.cli import dev as trial
    from gateway.cli.logs import configure_logging
    from gateway.cli.server import run_server, run_workers
    from gateway.services import ServicePlan, Services

    settings = settings_from(config, dev, host=host, port=port)
    if workers > 1 and not settings.store_url.startswith(("postgresql://", "postgres://")):
        fail("--workers needs a PostgreSQL store: a SQLite store is for one process on one machine "
             "(set store_url to postgresql://…, and queue_url to redis://… to share delivery)")
    check_port_free(settings.host, settings.port)
    configure_logging(settings)
    logging.getLogger("gateway.cli").info("gateway serve: %s", where(settings))
    _check_mappings(settings)
    _check_store(settings)
    sandbox_url = trial.sandbox_url(settings) if dev else None
    sandbox = trial.start_sandbox(sandbox_url) if sandbox_url is not None else None
    try:
        if dev or dev_token:
            reports = trial.load_demo_records(settings) if dev else []
            with Services.build(settings, ServicePlan(ingest=False, audit=False)) as services:
                token = _create_client(services.store, "dev-admin", ["system/*.cruds", "admin", "ingest:*"])
            trial.print_walkthrough(settings, token, reports, sandbox_url)
        options: dict[str, Any] = {"host": settings.host, "port": settings.port, "proxy_headers": True,
                                   "log_level": settings.log_level.lower(), "access_log": False, "log_config": None,
                                   "client_timeouts": settings.client_timeouts}
        if workers > 1:
            run_workers(settings, workers, **options)
        else:
            run_server(create_app(settings, plan=ServicePlan.for_serve(settings, os.environ), sighup=True), **options)
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(10)


def _check_mappings(settings: Settings) -> None:
    """Exit (2) listing the problems of the sources' mapping sets (``file:line`` each, as ``gateway
    config check`` does) before anything starts: the app compiles them at startup, inside uvicorn,
    which would answer a typo with a traceback and exit 3. Compiled sets are cached, so the app's
    own compile of them in this process costs next to nothing."""
    from gateway.ingest import compile_config
    from gateway.reload import source_locator

    path = settings.config_file
    _, issues = compile_config(settings.mappings_dir, settings.sources,
                               locate=source_locator(path) if path is not None else None)  # fmt: skip
    if issues:
        for issue in issues:
            typer.echo(str(issue), err=True)
        fail(f"{len(issues)} problem(s) in the mapping sets of {settings.mappings_dir}: nothing was started")


def _check_store(settings: Settings) -> None:
    """Exit with one line (and errors.py's code) when the store cannot be opened or migrated, before
    anything starts: inside uvicorn's startup it would be a traceback and exit 3."""
    from gateway.errors import GatewayError
    from gateway.store import open_store

    try:
        open_store(settings.store_url).close()
    except GatewayError as exc:
        fail(f"{exc} ({where(settings)})", exit_code_for(exc))


def _create_client(store: ClientRegistry, name: str, scopes: list[str], expires: datetime | None = None,
                   jwks: dict[str, Any] | None = None) -> str:
    from gateway.auth import create_client

    return create_client(store, name, scopes, expires, jwks)


JwksOption = Annotated[
    Path | None,
    typer.Option("--jwks", help="JSON file with the client's public JWK Set (SMART Backend Services)", dir_okay=False),
]
JwksUrlOption = Annotated[
    str | None, typer.Option("--jwks-url", help="URL the client publishes its public JWK Set at (https)"),
]


def key_set_from(jwks: Path | None, jwks_url: str | None) -> dict[str, Any] | None:
    """The key set ``--jwks FILE`` or ``--jwks-url URL`` registers (None for neither), or exit naming the problem."""
    import json

    from gateway.auth import KeySetError, check_key_set

    if jwks is not None and jwks_url is not None:
        fail("give --jwks or --jwks-url, not both")
    if jwks_url is not None:
        try:
            return check_key_set({"jwks_uri": jwks_url})
        except KeySetError as exc:
            fail(f"--jwks-url: {exc}")
    if jwks is None:
        return None
    try:
        data = json.loads(jwks.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{jwks}: cannot read: {exc.strerror}")
    except (UnicodeDecodeError, ValueError) as exc:
        fail(f"{jwks}: not JSON: {exc}")
    try:
        return check_key_set(data)
    except KeySetError as exc:
        fail(f"{jwks}: {exc}")


def parse_expiry(value: str, now: datetime) -> datetime:
    """``90d`` (days from ``now``) or an ISO date or date-time (UTC unless it says otherwise)."""
    if value[:-1].isdigit() and value[-1:] == "d":
        return now + timedelta(days=int(value[:-1]))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"invalid --expires {value!r}: use a number of days like 90d or a date like 2027-01-01")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="Client name (letters, digits, - and _)")],
    scope: Annotated[list[str], typer.Option(
        "--scope", "-s", help="A scope, or several separated by spaces (as in a SMART scope string); repeatable")],
    expires: Annotated[str | None, typer.Option(help="When the token stops working: 90d or 2027-01-01")] = None,
    jwks: JwksOption = None,
    jwks_url: JwksUrlOption = None,
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Create (or re-key) a client; its token is printed once, alone on the last line.

    With --jwks or --jwks-url the client can also get access tokens from the SMART token endpoint.
    """
    from gateway.auth import ClientNameError, ScopeError, check_client_name, validate_scopes
    from gateway.services import ServicePlan, Services

    scope = [part for given in scope for part in given.split()]
    try:
        check_client_name(name)
        validate_scopes(scope)
    except (ClientNameError, ScopeError) as exc:
        fail(str(exc), exit_code_for(exc))
    now = datetime.now(UTC)
    until = parse_expiry(expires, now) if expires else None
    if until is not None and until <= now:
        fail(f"--expires {expires} is in the past")
    keys = key_set_from(jwks, jwks_url)
    settings = settings_from(config, dev)
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        before = services.store.client_by_name(name)
        token = _create_client(services.store, name, scope, until, keys)
    if before is not None:
        # Said out loud: the old token, scopes and expiry are gone (`clients rotate` keeps them but the token).
        typer.echo(f"client {name} existed: its old token stops working, and its scopes and expiry are now"
                   " these (`gateway clients rotate` gives a new token and keeps the rest)", err=True)
    verb = "re-keyed" if before is not None else "created"
    typer.echo(f"{verb} client {name} with scopes {' '.join(scope)} in store {mask_url(settings.store_url)}"
               f" ({settings.config_file or 'no configuration file'}); the token is shown only now:")
    typer.echo(token)


@clients_app.command("revoke")
def clients_revoke(
    name: Annotated[str, typer.Argument(help="Client name")],
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Revoke a client: its token stops working in every process within a second."""
    from gateway.services import ServicePlan, Services

    settings = settings_from(config, dev)
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        found = services.store.revoke_client(name)
    if not found:
        fail(f"no client named {name!r} ({where(settings)})", 1)
    typer.echo(f"revoked client {name}")


@clients_app.command("set-keys")
def clients_set_keys(
    name: Annotated[str, typer.Argument(help="Client name")],
    jwks: JwksOption = None,
    jwks_url: JwksUrlOption = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the client's keys")] = False,
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Register (or replace, or --clear) the public keys a client signs SMART token requests with."""
    from gateway.services import ServicePlan, Services

    if clear == (jwks is not None or jwks_url is not None):
        fail("give one of --jwks FILE, --jwks-url URL or --clear")
    keys = None if clear else key_set_from(jwks, jwks_url)
    settings = settings_from(config, dev)
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        found = services.store.set_client_keys(name, keys)
    if not found:
        fail(f"no client named {name!r} ({where(settings)})", 1)
    if keys is None:
        typer.echo(f"removed the keys of client {name}; its access tokens end when they expire")
    elif "jwks_uri" in keys:
        typer.echo(f"client {name} signs with the keys published at {keys['jwks_uri']}")
    else:
        typer.echo(f"client {name} signs with key(s) {', '.join(str(k.get('kid')) for k in keys['keys'])}")


@clients_app.command("rotate")
def clients_rotate(
    name: Annotated[str, typer.Argument(help="Client name")],
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Give a client a new token (the old one stops working); printed once, alone on the last line."""
    from gateway.auth import hash_token, new_token
    from gateway.services import ServicePlan, Services

    token = new_token()
    settings = settings_from(config, dev)
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        found = services.store.rekey_client(name, hash_token(token))
    if not found:
        fail(f"no client named {name!r} that is not revoked ({where(settings)})", 1)
    typer.echo(f"new token for client {name}; the old one stops working within a second; shown only now:")
    typer.echo(token)


@clients_app.command("list")
def clients_list(config: ConfigOption = None, dev: DevOption = False) -> None:
    """List clients: name, scopes, created, expires, state, last use, SMART keys and policy (never tokens)."""
    from gateway.services import ServicePlan, Services

    def stamp(when: datetime | None) -> str:
        return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    now = datetime.now(UTC)
    settings = settings_from(config, dev)
    configured = settings.data_policies()
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        clients = services.store.list_clients()
        if not clients:
            typer.echo(f"no API clients ({where(settings)})", err=True)
        for client in clients:
            if client.revoked is not None:
                state = f"revoked {stamp(client.revoked)}"
            elif client.disabled:
                state = "disabled"
            elif client.expires is not None and client.expires <= now:
                state = "expired"
            else:
                state = "active"
            typer.echo(f"{client.name}\t{' '.join(client.scopes)}\tcreated {stamp(client.created)}"
                       f"\texpires {stamp(client.expires)}\t{state}\tlast used {stamp(client.last_used)}"
                       f"\tpolicy {_policy_text(client.policy, configured.get(client.name))}"
                       f"\tkeys {_keys_summary(client.jwks)}")


def _keys_summary(jwks: Mapping[str, Any] | None) -> str:
    """A client's SMART keys in a word: their kids, the URL they are fetched from, or ``-``."""
    if not jwks:
        return "-"
    if "jwks_uri" in jwks:
        return str(jwks["jwks_uri"])
    return ",".join(str(key.get("kid")) for key in jwks.get("keys", []) if isinstance(key, Mapping))


def _policy_text(stored: Any, configured: Any) -> str:
    from gateway.search import DataPolicy, PolicyError

    if configured is not None:
        return f"{configured.describe()} (from the configuration)"
    if stored is None:
        return "-"
    try:
        return str(DataPolicy.from_json(stored).describe())
    except PolicyError as exc:
        return f"unreadable, refuses every request ({exc})"


@clients_app.command("set-policy")
def clients_set_policy(
    name: Annotated[str, typer.Argument(help="Client name")],
    organization: Annotated[list[str] | None, typer.Option(
        "--organization", "-o", help="Organization/<id>: it and every Organization partOf it; repeatable")] = None,
    district: Annotated[list[str] | None, typer.Option(
        "--district", "-d", help="A Patient address district (any address part); repeatable")] = None,
    patient: Annotated[list[str] | None, typer.Option(
        "--patient", "-p", help="Patient/<id>: that Patient's compartment; repeatable")] = None,
    deidentify: Annotated[bool, typer.Option(
        "--deidentify", help="Strip names, identifiers, contacts, notes and narrative from all it gets")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the policy: the scopes alone decide")] = False,
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Limit which Patients (and whose data) a client sees; takes effect within a second."""
    from gateway.search import DataPolicy, PolicyError
    from gateway.services import ServicePlan, Services

    chosen = bool(organization or district or patient or deidentify)
    if clear == chosen:
        fail("give --clear, or at least one of --organization, --district, --patient, --deidentify")
    policy = None
    if not clear:
        try:
            policy = DataPolicy.from_json({"organizations": organization or [], "districts": district or [],
                                           "patients": patient or [], "deidentify": deidentify})
        except PolicyError as exc:
            fail(str(exc), exit_code_for(exc))
    settings = settings_from(config, dev)
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        found = services.store.set_client_policy(name, None if policy is None else policy.to_json())
    if not found:
        fail(f"no client named {name!r} ({where(settings)})", 1)
    typer.echo(f"client {name}: data policy {'removed' if policy is None else policy.describe()}")
    if name in settings.client_policies:
        typer.echo(f"note: the configuration's client_policies.{name} overrides this", err=True)


@config_app.command("check", help=(
    "Validate the configuration and print it with secrets masked.\n\n"
    "The files it names are checked as the gateway would read them: each source's mapping set must exist in"
    " mappings_dir and compile (static checks included), and each DHIS2 destination's mapping files must exist."
    " Problems are listed as file:line; exit status 2."
))
def config_check(config: ConfigOption = None, dev: DevOption = False) -> None:
    """Validate the configuration and the files it names, and print it with secrets masked."""
    import json

    from gateway.cli.config_checks import config_problems

    settings = settings_from(config, dev)
    problems = config_problems(settings, os.environ)
    if problems:
        for problem in problems:
            typer.echo(problem, err=True)
        fail(f"{len(problems)} problem(s) in the files the configuration names ({where(settings)})")
    data = settings.model_dump(mode="json", exclude={"config_file"})
    data["store_url"] = mask_url(settings.store_url)
    data["queue_url"] = mask_url(settings.queue_url)
    if settings.rate_limit.redis_url is not None:
        data["rate_limit"]["redis_url"] = mask_url(settings.rate_limit.redis_url)
    for destination, configured in zip(data["destinations"], settings.destinations, strict=True):
        destination["base_url"] = mask_url(configured.base_url)
    for source in data["sources"]:  # a pulled source's API root is a URL like a destination's
        pull = source.get("pull")
        if isinstance(pull, dict) and isinstance(pull.get("base_url"), str):
            pull["base_url"] = mask_url(pull["base_url"])
    typer.echo(json.dumps(data, indent=2, default=str))
    typer.echo(f"configuration OK ({settings.config_file or 'no file: defaults and GATEWAY_* variables'})", err=True)


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

    raise typer.Exit(run_and_report(base_url.rstrip("/"), token, console=console(),
                                    types=set(resource_type or []) or None))


def main() -> None:
    """Console-script entry point.

    A gateway error no command turned into its own message (a store or queue that cannot be
    reached or used) ends the command with one line and the exit code ``gateway/errors.py``
    gives it, not a traceback.
    """
    from gateway.errors import GatewayError

    try:
        app(prog_name="gateway")
    except GatewayError as exc:
        typer.echo(f"gateway: {exc}", err=True)
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
