"""The bundled R4 data files under ``gateway/r4/data`` (element table, bindings, invariants, reference targets)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_table(name: str) -> dict[str, Any]:
    """One of the bundled R4 data files (``r4-elements.json``, ``r4-bindings.json``…), freshly parsed."""
    text = resources.files("gateway.r4").joinpath("data", name).read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table
