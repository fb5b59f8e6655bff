"""Recorded DHIS2 payloads (``tests/dhis2/samples``) and a JSON shape comparison helper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "samples"


def load_sample(name: str) -> Any:
    """One recorded sample, parsed."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and scalar types, the first item of lists."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "str"


def keys_of(value: Any) -> set[str]:
    """Top-level keys of a JSON object."""
    assert isinstance(value, dict)
    return set(value)
