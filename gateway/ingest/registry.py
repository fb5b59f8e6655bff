"""The mapping sets in use, and which source uses which set.

Mappings are compiled once at start-up. ``reload`` recompiles from disk after an
integrator fixed a mapping, and ``stage`` + ``install`` replace the sources too (``POST
/admin/reload``, SIGHUP): if the new files or sources have any problem the old ones stay in
use and the problems are returned, so a typo can never take ingest down. The sources, the
sets and the folder they come from are one ``MappingConfig`` swapped in a single reference
assignment, so a request that looked its source up with ``resolve`` maps with that source's
set even while a reload lands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, FhirError
from gateway.ingest.config import SourceConfig
from gateway.mapping import LoadIssue, MappingSet, load_mappings

__all__ = ["IngestConfigError", "MappingConfig", "MappingRegistry", "SourceLocator", "compile_config"]

#: Where ``sources[i].mapping`` is written (file, line), for problems about a source's set.
SourceLocator = Callable[[int], tuple[str, int]]


class IngestConfigError(ConfigError):
    """The configured sources and the mapping files do not fit together."""


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """Sources, their compiled mapping sets and the folder those came from: installed as one."""

    root: Path
    sources: dict[str, SourceConfig]
    sets: dict[str, MappingSet]


def compile_config(
    root: Path,
    sources: Sequence[SourceConfig],
    *,
    interpret: bool = False,
    locate: SourceLocator | None = None,
    positions: Sequence[int] | None = None,
) -> tuple[MappingConfig | None, list[LoadIssue]]:
    """Compile ``root`` for ``sources``: the config, or None and every problem (file:line each).
    ``positions``: where each source stands in the configuration's list (default: as given)."""
    by_name = {source.name: source for source in sources}
    if not sources and not root.is_dir():
        return MappingConfig(root, by_name, {}), []  # a gateway that ingests nothing needs no mappings folder
    loaded = load_mappings(root, interpret=interpret)
    issues = list(loaded.issues)
    for index, source in zip(positions if positions is not None else range(len(sources)), sources, strict=True):
        if source.mapping not in loaded.sets:
            file, line = locate(index) if locate is not None else (str(root), 0)
            known = ", ".join(sorted(loaded.sets)) or "none"
            issues.append(LoadIssue(file, line, f"sources[{index}].mapping",
                                    f"source {source.name} → {source.mapping}: {root} has no mapping set"
                                    f" {source.mapping!r} (it has: {known})"))  # fmt: skip
    if issues:
        return None, issues
    return MappingConfig(root, by_name, loaded.sets), []


class MappingRegistry:
    """Compiled mapping sets plus the configured sources, swapped atomically on reload."""

    def __init__(self, root: Path, sources: list[SourceConfig], *, interpret: bool = False) -> None:
        self.interpret = interpret  # benchmarks only: see gateway.mapping.expressions
        self._lock = threading.Lock()
        config, issues = compile_config(root, sources, interpret=interpret)
        if config is None:
            problems = "\n".join(str(issue) for issue in issues[:20])
            raise IngestConfigError(f"mappings in {root} have {len(issues)} problem(s):\n{problems}")
        self._config = config

    @property
    def config(self) -> MappingConfig:
        """What is in use now (one consistent snapshot)."""
        return self._config

    @property
    def root(self) -> Path:
        """The mappings folder in use."""
        return self._config.root

    @property
    def sources(self) -> dict[str, SourceConfig]:
        """The configured sources, by name."""
        return self._config.sources

    @property
    def sets(self) -> dict[str, MappingSet]:
        """The mapping sets in use, by name."""
        return self._config.sets

    def source(self, name: str) -> SourceConfig:
        """A configured source, or a 404 ``FhirError``."""
        return self.resolve(name)[0]

    def resolve(self, name: str) -> tuple[SourceConfig, MappingSet]:
        """A configured source and its mapping set, from the same snapshot (404 ``FhirError`` if unknown)."""
        config = self._config
        source = config.sources.get(name)
        if source is None:
            raise FhirError(f"no source {name[:64]!r} is configured", status=404, code="not-found")
        return source, config.sets[source.mapping]

    def mapping_set(self, source: SourceConfig) -> MappingSet:
        """The mapping set a source uses."""
        return self._config.sets[source.mapping]

    def stage(
        self,
        root: Path,
        sources: Sequence[SourceConfig],
        locate: SourceLocator | None = None,
        positions: Sequence[int] | None = None,
    ) -> tuple[MappingConfig | None, list[LoadIssue]]:
        """Compile a candidate configuration without installing it (see ``compile_config``)."""
        return compile_config(root, sources, interpret=self.interpret, locate=locate, positions=positions)

    def install(self, config: MappingConfig) -> None:
        """Put a staged configuration in use (one assignment: requests see the old or the new)."""
        with self._lock:
            self._config = config

    def reload(self) -> list[LoadIssue]:
        """Recompile the mappings folder for the current sources; on any problem keep the current sets."""
        with self._lock:
            current = self._config
            config, issues = compile_config(current.root, list(current.sources.values()), interpret=self.interpret)
            if config is None:
                return issues
            self._config = config
            return []
