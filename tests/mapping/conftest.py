"""Fixtures for mapping tests: the shipped mappings, compiled once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.mapping import LoadedMappings, MappingSet, load_mappings

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@pytest.fixture(scope="session")
def shipped() -> LoadedMappings:
    """The shipped mapping sets, loaded once (loading must report no issue)."""
    loaded = load_mappings(MAPPINGS)
    assert loaded.issues == []
    return loaded


@pytest.fixture(scope="session")
def sets(shipped: LoadedMappings) -> dict[str, MappingSet]:
    """Shipped mapping sets by name."""
    return shipped.sets


MappingsFactory = Callable[..., Path]


@pytest.fixture
def mappings_dir(tmp_path: Path) -> MappingsFactory:
    """A copy of the shipped ConceptMaps plus the given files: ``make({"x/set.yaml": "..."})``."""

    calls = iter(range(1000))

    def make(files: dict[str, str], *, with_shipped_sets: bool = False) -> Path:
        root = tmp_path / f"mappings{next(calls)}"
        if with_shipped_sets:
            shutil.copytree(MAPPINGS, root)
        else:
            shutil.copytree(MAPPINGS / "conceptmaps", root / "conceptmaps")
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    return make
