"""The official FHIR R4 examples (npm ``hl7.fhir.r4.examples@4.0.1``) and R4B-model verdicts.

``r4b_verdicts()`` says, for every example file, whether the ``fhir.resources`` R4B models
accept it (``None``) or why not (a short error). Parsing all 5,306 files takes about a
minute of CPU, so the verdicts are computed in a process pool once and cached in
the test cache (``tests.support.npm``) keyed by the fhir.resources version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tests.support.npm import DEFAULT_CACHE, R4_EXAMPLES, package_dir

_NOT_RESOURCES = {"package.json", ".index.json"}


def examples_dir() -> Path:
    """The extracted example package folder (downloaded on first use)."""
    return package_dir(R4_EXAMPLES)


def example_names() -> list[str]:
    """File names of all example resources, sorted."""
    return sorted(p.name for p in examples_dir().glob("*.json") if p.name not in _NOT_RESOURCES)


def load_example(name: str) -> dict[str, Any]:
    """One example resource as parsed JSON."""
    data: dict[str, Any] = json.loads((examples_dir() / name).read_text(encoding="utf-8"))
    return data


def iter_examples() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every example."""
    for name in example_names():
        yield name, load_example(name)


def without_primitive_extensions(node: Any) -> Any:
    """A copy without ``_x`` keys: the R4B models refuse legal primitive extensions on an
    extension's value (``Extension._valueString``), so verdicts are also taken without them."""
    if isinstance(node, dict):
        return {key: without_primitive_extensions(value) for key, value in node.items() if not key.startswith("_")}
    if isinstance(node, list):
        return [without_primitive_extensions(item) for item in node]
    return node


def r4b_verdict(resource: dict[str, Any]) -> str | None:
    """None if the fhir.resources R4B model for the resource's type accepts it, else why not."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(str(resource.get("resourceType")))
    except (KeyError, ValueError) as exc:
        return f"no R4B model: {exc}"
    try:
        model.model_validate(resource)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        first = str(exc).splitlines()
        return " | ".join(first[:3])[:300]
    return None


def _verdicts_of(names: list[str]) -> dict[str, str | None]:
    return {name: r4b_verdict(load_example(name)) for name in names}


@cache
def r4b_verdicts() -> dict[str, str | None]:
    """Example file name -> None (R4B accepts it) or the R4B validation error, cached on disk."""
    cache_file = DEFAULT_CACHE.parent / f"r4b-verdicts-{version('fhir.resources')}-{R4_EXAMPLES.slug}.json"
    if cache_file.exists():
        cached: dict[str, str | None] = json.loads(cache_file.read_text(encoding="utf-8"))
        return cached
    names = example_names()
    workers = max(1, min(4, os.cpu_count() or 1))
    chunks = [names[i :: workers * 4] for i in range(workers * 4)]
    verdicts: dict[str, str | None] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_verdicts_of, chunks):
            verdicts.update(part)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps(verdicts, sort_keys=True, indent=0), encoding="utf-8")
    tmp.replace(cache_file)
    return verdicts
