"""What ``gateway config check`` looks at beyond the settings' own validation: the files the
configuration names, as the running gateway would read them.

* every source's mapping set compiles from ``mappings_dir`` (YAML, schema, FHIRPath, the static
  checks) and exists: what ``gateway serve`` and a reload would refuse;
* every DHIS2 destination's mapping files (``options.mapping``, ``options.aggregate_mapping``,
  ``options.report.measure``) exist: a missing one would only fail the first delivery.

Each problem is ``file:line: where: reason``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["config_problems"]


def config_problems(settings: Settings) -> list[str]:
    """Every problem of the files ``settings`` name (empty when they are all there and compile)."""
    from gateway.ingest import compile_config
    from gateway.reload import source_locator

    path = settings.config_file
    locate = source_locator(path) if path is not None else None
    _, issues = compile_config(settings.mappings_dir, settings.sources, locate=locate)
    return [str(issue) for issue in issues] + _missing_destination_files(settings)


def _missing_destination_files(settings: Settings) -> list[str]:
    from gateway.connectors.dhis2 import Dhis2Options
    from gateway.mapping import YamlSyntaxError, format_path, read_yaml

    problems: list[str] = []
    doc = None
    if settings.config_file is not None:
        try:
            doc = read_yaml(settings.config_file)
        except YamlSyntaxError:
            doc = None
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
            written = doc is not None and isinstance(doc.data, dict) and "destinations" in doc.data
            at = "GATEWAY_DESTINATIONS"
            if written and doc is not None:
                at = f"{settings.config_file}:{doc.line_of(doc.data_path(loc))}"
            problems.append(f"{at}: {format_path(loc)}: {file} does not exist"
                            f" (destination {destination.name}; relative paths start in {Path.cwd()})")  # fmt: skip
    return problems
