"""The shared samples the stand-ins serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "samples"


def odk_sample_rows() -> list[dict[str, Any]]:
    """The rows of the expanded ODK Central household visit sample (repeats inline, as stored)."""
    data = json.loads((SAMPLES / "odk-central-odata-submissions-expanded.json").read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = data["value"]
    return rows
