"""``gateway dhis2 …`` commands.

    gateway dhis2 ping moh-dhis2                          # up? which version? credentials?
    gateway dhis2 metadata pull moh-dhis2                 # a configured destination
    gateway dhis2 metadata pull https://dhis2.example.org --token-file pat.txt --out meta.json

The lead mounts ``dhis2_app`` as the ``dhis2`` sub-command of the gateway CLI. Secrets come
from the destination's ``auth`` (an environment variable or file, resolved by
``gateway.connectors.config.resolve_credentials`` from the mapping the CLI passes in) or from
``--token-file``/``--password-file``; they are never printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import ConfigOption, DevOption, config_file, describe_validation_error, fail, settings_from
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

__all__ = ["dhis2_app", "resolve_destination"]

dhis2_app = typer.Typer(help="DHIS2 destinations: metadata cache, org units.", no_args_is_help=True)
metadata_app = typer.Typer(help="The DHIS2 metadata cache.", no_args_is_help=True)
org_units_app = typer.Typer(
    help="DHIS2 org units as FHIR Locations/Organizations (mCSD).", no_args_is_help=True
)
dhis2_app.add_typer(metadata_app, name="metadata")
dhis2_app.add_typer(org_units_app, name="org-units")


def _secret_from(path: Path) -> SecretStr:
    from pydantic import SecretStr

    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise typer.BadParameter(f"{path} is empty")
    return SecretStr(value)


def resolve_destination(
    destination: str,
    settings: Any,
    environ: Mapping[str, str],
    *,
    token_file: Path | None = None,
    username: str | None = None,
    password_file: Path | None = None,
) -> tuple[str, httpx.Auth | None, Path]:
    """Base URL, auth and cache file for a destination name or a DHIS2 base URL."""
    from gateway.connectors import AuthConfig, Credentials, resolve_credentials
    from gateway.connectors.dhis2 import Dhis2Options

    if destination.startswith(("http://", "https://")):
        name = "adhoc"
        base_url, options, auth = destination, Dhis2Options(), None
    else:
        found = [d for d in getattr(settings, "destinations", []) if getattr(d, "name", None) == destination]
        if not found or found[0].kind != "dhis2":
            names = [d.name for d in getattr(settings, "destinations", []) if d.kind == "dhis2"]
            source = getattr(settings, "config_file", None) or "none: no --config, GATEWAY_CONFIG or ./gateway.yaml"
            known = f"its DHIS2 destinations: {', '.join(names)}" if names else "it has no DHIS2 destination"
            raise typer.BadParameter(
                f"no DHIS2 destination named {destination!r} in the configuration ({source}; {known})"
            )
        name = destination
        base_url, options = found[0].base_url, Dhis2Options.model_validate(found[0].options)
        auth = resolve_credentials(found[0].auth, environ).httpx_auth() if found[0].auth else None
    if token_file is not None:
        auth = Credentials(
            AuthConfig(type="api_token", secret_file=token_file), _secret_from(token_file)
        ).httpx_auth()
    elif password_file is not None:
        if not username:
            raise typer.BadParameter("--password-file needs --username")
        config = AuthConfig(type="basic", username=username, secret_file=password_file)
        auth = Credentials(config, _secret_from(password_file)).httpx_auth()
    cache = options.metadata_cache or Path(f"dhis2-{name}-metadata.json")
    return base_url, auth, cache


def _access(
    destination: str,
    config: Path | None,
    *,
    token_file: Path | None = None,
    username: str | None = None,
    password_file: Path | None = None,
    need_settings: bool = False,
    dev: bool = False,
) -> tuple[Any, str, httpx.Auth | None, Path]:
    """Settings (None for a bare URL unless needed), base URL, auth and cache file; exit 2 on bad config."""
    from pydantic import ValidationError

    from gateway.connectors import DeliveryConfigError
    from gateway.settings import ConfigFileError, load_settings

    settings: Any = None
    try:
        if need_settings or not destination.startswith(("http://", "https://")):
            config = config_file(config, dev)
            try:
                settings = load_settings(config)
            except ValidationError as exc:  # file:line (or GATEWAY_ variable) and setting, as `config check`
                fail(describe_validation_error(exc, config))
        base_url, auth, cache = resolve_destination(
            destination,
            settings,
            os.environ,
            token_file=token_file,
            username=username,
            password_file=password_file,
        )
    except (ConfigFileError, ValidationError, DeliveryConfigError) as exc:
        typer.echo(f"gateway: {exc}", err=True)
        raise typer.Exit(2) from exc
    except typer.BadParameter as exc:  # one line naming where it looked, not a box cut at 80 columns
        typer.echo(f"gateway: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    return settings, base_url, auth, cache


async def _ping(base_url: str, auth: httpx.Auth | None) -> tuple[bool, str]:
    """(everything fine, one line): reachable, credentials accepted, version supported."""
    from gateway.connectors.dhis2 import Dhis2Client, Dhis2HttpError, check_version, default_timeout

    client = Dhis2Client(base_url, auth=auth, timeout=default_timeout(15.0))
    try:
        try:
            info = await client.system_info()
        except Dhis2HttpError as exc:
            if exc.http_status not in (401, 403):
                raise
            path = await client.ping()  # version unknown: the client tries both paths
            refused = f"the credentials are refused (HTTP {exc.http_status})"
            return False, f"DHIS2 at {base_url}: up (GET {path}), but {refused}"
        path = await client.ping()  # the path of this version
        try:
            check_version(info.version)
        except ValueError as exc:
            return False, f"DHIS2 {info.version_text} at {base_url}: up (GET {path}), {exc}"
        return True, f"DHIS2 {info.version_text} at {base_url}: up (GET {path}), credentials accepted, supported"
    finally:
        await client.aclose()



# Options every command that reaches a DHIS2 takes (--config and --dev as for every command).
TokenFileOption = Annotated[Path | None, typer.Option(help="file holding a Personal Access Token")]
UsernameOption = Annotated[str | None, typer.Option(help="Basic auth user (with --password-file)")]
PasswordFileOption = Annotated[Path | None, typer.Option(help="file holding the Basic auth password")]

@dhis2_app.command("ping")
def ping(
    destination: Annotated[str, typer.Argument(help="destination name, or a DHIS2 base URL")],
    config: ConfigOption = None,
    dev: DevOption = False,
    token_file: TokenFileOption = None,
    username: UsernameOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Check a DHIS2: reachable, credentials accepted, version supported (exit 1 if not)."""
    from gateway.connectors.dhis2 import Dhis2Error

    _, base_url, auth, _ = _access(
        destination, config, token_file=token_file, username=username, password_file=password_file, dev=dev
    )
    try:
        fine, line = asyncio.run(_ping(base_url, auth))
    except Dhis2Error as exc:
        typer.echo(f"gateway: DHIS2 at {base_url} is not reachable: {exc}", err=True)
        raise typer.Exit(exit_code_for(exc)) from exc
    typer.echo(line)
    if not fine:
        raise typer.Exit(1)


async def _pull(base_url: str, auth: httpx.Auth | None, out: Path, page_size: int) -> dict[str, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from gateway.connectors.dhis2 import FIELDS, Dhis2Client, MetadataCache, default_timeout

    client = Dhis2Client(base_url, auth=auth, timeout=default_timeout(60.0))
    try:
        with Progress(
            TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), transient=False
        ) as progress:
            tasks = {name: progress.add_task(name, total=None) for name in FIELDS}

            def advance(collection: str, page: int, page_count: int) -> None:
                progress.update(tasks[collection], completed=page, total=page_count)

            snapshot = await MetadataCache(out).refresh(client, progress=advance)
    finally:
        await client.aclose()
    return {name: len(objects) for name, objects in snapshot.collections.items()}


@metadata_app.command("pull")
def pull(
    destination: Annotated[str, typer.Argument(help="destination name, or a DHIS2 base URL")],
    out: Annotated[
        Path | None, typer.Option(help="cache file (default: the destination's metadata_cache)")
    ] = None,
    config: ConfigOption = None,
    dev: DevOption = False,
    token_file: TokenFileOption = None,
    username: UsernameOption = None,
    password_file: PasswordFileOption = None,
    page_size: Annotated[int, typer.Option(min=1, max=10_000, help="objects per page")] = 200,
) -> None:
    """Fetch programs, stages, data elements, attributes, option sets, org units and data sets."""
    from gateway.connectors.dhis2 import Dhis2Error

    _, base_url, auth, cache = _access(
        destination, config, token_file=token_file, username=username, password_file=password_file, dev=dev
    )
    target = out or cache
    try:
        counts = asyncio.run(_pull(base_url, auth, target, page_size))
    except Dhis2Error as exc:
        typer.echo(f"gateway: {exc}", err=True)
        raise typer.Exit(exit_code_for(exc)) from exc
    summary = ", ".join(f"{count} {name}" for name, count in counts.items())
    typer.echo(f"stored {target}: {summary}")


async def _pull_org_units(base_url: str, auth: httpx.Auth | None, store: Any) -> tuple[int, int]:
    from gateway.connectors.dhis2 import Dhis2Client, default_timeout, pull_org_units

    client = Dhis2Client(base_url, auth=auth, timeout=default_timeout(60.0))
    try:
        return await pull_org_units(client, store)
    finally:
        await client.aclose()


@org_units_app.command("pull")
def pull_org_units(
    destination: Annotated[str, typer.Argument(help="destination name, or a DHIS2 base URL")],
    config: ConfigOption = None,
    dev: DevOption = False,
    token_file: TokenFileOption = None,
    username: UsernameOption = None,
    password_file: PasswordFileOption = None,
) -> None:
    """Write DHIS2 org units into the store as Location + Organization (only what changed)."""
    from gateway.connectors.dhis2 import Dhis2Error
    from gateway.services import ServicePlan, Services

    settings, base_url, auth, _ = _access(
        destination,
        config,
        token_file=token_file,
        username=username,
        password_file=password_file,
        need_settings=True,
        dev=dev,
    )
    with Services.build(settings, ServicePlan(ingest=False)) as services:
        try:
            units, written = asyncio.run(_pull_org_units(base_url, auth, services.store))
        except Dhis2Error as exc:
            typer.echo(f"gateway: {exc}", err=True)
            raise typer.Exit(exit_code_for(exc)) from exc
    typer.echo(f"{units} org units, {written} Location/Organization resources written")


@dhis2_app.command("check-mappings")
def check_mappings(
    destination: Annotated[str, typer.Argument(help="destination name, or a DHIS2 base URL")],
    files: Annotated[
        list[Path] | None, typer.Argument(help="mapping files (default: <mappings folder>/dhis2/*.yaml)")
    ] = None,
    config: ConfigOption = None,
    dev: DevOption = False,
    metadata: Annotated[Path | None, typer.Option(help="use this metadata cache instead of fetching")] = None,
    token_file: TokenFileOption = None,
    mappings: Annotated[
        Path | None, typer.Option(help="mappings folder (default: the configuration's mappings_dir)")
    ] = None,
) -> None:
    """Check DHIS2 mappings against a DHIS2's metadata (unknown elements, option codes, org units).

    The ConceptMaps and the default files come from the configuration's ``mappings_dir``
    (``--config``), as the running gateway reads them, unless ``--mappings`` names another folder.
    """
    from gateway.connectors.dhis2 import (
        Dhis2Client,
        Dhis2Error,
        MetadataSnapshot,
        check_mapping,
        default_timeout,
        load_tables,
        pull_metadata,
    )
    from gateway.mapping import LoadIssue

    if metadata is not None:
        snapshot = MetadataSnapshot.load(metadata)
    else:
        _, base_url, auth, _ = _access(destination, config, token_file=token_file, dev=dev)

        async def fetch() -> MetadataSnapshot:
            client = Dhis2Client(base_url, auth=auth, timeout=default_timeout(60.0))
            try:
                return await pull_metadata(client)
            finally:
                await client.aclose()

        try:
            snapshot = asyncio.run(fetch())
        except Dhis2Error as exc:
            typer.echo(f"gateway: {exc}", err=True)
            raise typer.Exit(exit_code_for(exc)) from exc
    if mappings is None:
        mappings = settings_from(config, dev).mappings_dir
    issues: list[LoadIssue] = []
    tables = load_tables(mappings, issues)
    targets = files or sorted(p for p in (mappings / "dhis2").glob("*.yaml") if "measure" not in p.name)
    for path in targets:
        issues.extend(check_mapping(path, snapshot, tables))
    for issue in issues:
        typer.echo(str(issue))
    typer.echo(
        f"{len(targets)} DHIS2 mapping file(s) checked against {snapshot.base_url}: {len(issues)} problem(s)"
    )
    if issues:
        raise typer.Exit(1)
