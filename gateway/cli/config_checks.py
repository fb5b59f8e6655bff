"""What ``gateway config check`` looks at beyond the settings' own validation: the files the
configuration names, as the running gateway would read them.

* every source's mapping set compiles from ``mappings_dir`` (YAML, schema, FHIRPath, the static
  checks) and exists: what ``gateway serve`` and a reload would refuse;
* every DHIS2 destination's mapping files (``options.mapping``, ``options.aggregate_mapping``,
  ``options.report.measure``) exist: a missing one would only fail the first delivery;
* every secret a destination's or a pulled source's ``auth`` names can be read (the environment
  variable is set, the file exists and is not empty): ``gateway worker`` and the pulls would
  refuse to start or fail on their first request.

Each problem is ``file:line: where: reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["config_problems"]


def config_problems(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem of the files and secrets ``settings`` name (empty when they are all there,
    readable and compile); ``environ`` holds the secrets' variables (None: secrets not checked)."""
    from gateway.ingest import compile_config
    from gateway.reload import source_locator

    path = settings.config_file
    locate = source_locator(path) if path is not None else None
    _, issues = compile_config(settings.mappings_dir, settings.sources, locate=locate)
    at = _locator(settings)
    problems = [str(issue) for issue in issues] + _missing_destination_files(settings, at)
    if environ is not None:
        problems += _unreadable_secrets(settings, environ, at)
    return problems


def _locator(settings: Settings) -> Callable[[tuple[str | int, ...]], str]:
    """Where a setting at ``loc`` was given: ``file:line`` when the configuration file wrote its
    section, else the section's ``GATEWAY_`` variable."""
    from gateway.mapping import YamlSyntaxError, read_yaml

    doc = None
    if settings.config_file is not None:
        try:
            doc = read_yaml(settings.config_file)
        except YamlSyntaxError:
            doc = None

    def at(loc: tuple[str | int, ...]) -> str:
        section = str(loc[0])
        if doc is not None and isinstance(doc.data, dict) and section in doc.data:
            return f"{settings.config_file}:{doc.line_of(doc.data_path(loc))}"
        return f"GATEWAY_{section.upper()}"

    return at


def _unreadable_secrets(
    settings: Settings, environ: Mapping[str, str], at: Callable[[tuple[str | int, ...]], str]
) -> list[str]:
    from gateway.connectors import AuthConfig, DeliveryConfigError, resolve_credentials
    from gateway.mapping import format_path

    named: list[tuple[tuple[str | int, ...], str, Any]] = [
        (("destinations", i, "auth"), f"destination {d.name}", d.auth) for i, d in enumerate(settings.destinations)
    ]
    named += [
        (("sources", i, "pull", "auth"), f"source {source.name}", (source.pull or {}).get("auth"))
        for i, source in enumerate(settings.sources)
    ]
    problems: list[str] = []
    for loc, who, auth in named:
        if auth is None:
            continue
        try:
            resolve_credentials(auth if isinstance(auth, AuthConfig) else AuthConfig.model_validate(auth), environ)
        except (DeliveryConfigError, ValueError) as exc:
            problems.append(f"{at(loc)}: {format_path(loc)}: {exc} ({who})")
    return problems


def _missing_destination_files(settings: Settings, at: Callable[[tuple[str | int, ...]], str]) -> list[str]:
    from gateway.connectors.dhis2 import Dhis2Options
    from gateway.mapping import format_path

    problems: list[str] = []
    for index, destination in enumerate(settings.destinations):
        if destination.kind != "dhis2":
            continue
        options = Dhis2Options.model_validate(destination.options)
        named: list[tuple[tuple[str | int, ...], Path | None]] = [
            (("options", "mapping"), options.mapping),
            (("options", "aggregate_mapping"), options.aggregate_mapping),
            (("options", "report", "measure"), options.report.measure if options.report else None),
        ]
        for where, file in named:
            if file is None or file.is_file():
                continue
            loc = ("destinations", index, *where)
            problems.append(f"{at(loc)}: {format_path(loc)}: {file} does not exist"
                            f" (destination {destination.name}; relative paths start in {Path.cwd()})")  # fmt: skip
    return problems
