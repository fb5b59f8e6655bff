"""The mapping sets in use, and which source uses which set.

Mappings are compiled once at start-up. ``reload`` recompiles from disk after an
integrator fixed a mapping: if the new files have any problem the old sets stay in use
and the problems are returned, so a typo can never take ingest down.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.errors import ConfigError, FhirError
from gateway.ingest.config import SourceConfig
from gateway.mapping import LoadIssue, MappingSet, load_mappings

__all__ = ["IngestConfigError", "MappingRegistry"]


class IngestConfigError(ConfigError):
    """The configured sources and the mapping files do not fit together."""


class MappingRegistry:
    """Compiled mapping sets plus the configured sources, swapped atomically on reload."""

    def __init__(self, root: Path, sources: list[SourceConfig], *, interpret: bool = False) -> None:
        self.root = root
        self.interpret = interpret  # benchmarks only: see gateway.mapping.expressions
        self.sources = {source.name: source for source in sources}
        self._lock = threading.Lock()
        self._sets: dict[str, MappingSet] = {}
        if not self.sources and not root.is_dir():
            return  # a gateway that ingests nothing needs no mappings folder
        loaded = load_mappings(root, interpret=interpret)
        if loaded.issues:
            problems = "\n".join(str(issue) for issue in loaded.issues[:20])
            raise IngestConfigError(f"mappings in {root} have {len(loaded.issues)} problem(s):\n{problems}")
        self._check_sources(loaded.sets)
        self._sets = loaded.sets

    def _check_sources(self, sets: dict[str, MappingSet]) -> None:
        missing = sorted(f"{s.name} → {s.mapping}" for s in self.sources.values() if s.mapping not in sets)
        if missing:
            raise IngestConfigError(
                f"sources name mapping sets that {self.root} does not have: {', '.join(missing)}"
            )

    @property
    def sets(self) -> dict[str, MappingSet]:
        """The mapping sets in use, by name."""
        return self._sets

    def source(self, name: str) -> SourceConfig:
        """A configured source, or a 404 ``FhirError``."""
        source = self.sources.get(name)
        if source is None:
            raise FhirError(f"no source {name[:64]!r} is configured", status=404, code="not-found")
        return source

    def mapping_set(self, source: SourceConfig) -> MappingSet:
        """The mapping set a source uses."""
        return self._sets[source.mapping]

    def reload(self) -> list[LoadIssue]:
        """Recompile from disk; on any problem keep the current sets and return the problems."""
        with self._lock:
            loaded = load_mappings(self.root, interpret=self.interpret)
            if loaded.issues:
                return loaded.issues
            try:
                self._check_sources(loaded.sets)
            except IngestConfigError as exc:
                return [LoadIssue(str(self.root), 0, "sources", str(exc))]
            self._sets = loaded.sets
            return []
