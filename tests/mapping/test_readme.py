"""The "write your first mapping" walkthrough in mappings/README.md works as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.mapping import load_mapping_sets

README = Path(__file__).resolve().parents[2] / "mappings" / "README.md"


def test_walkthrough_mapping_runs(mappings_dir) -> None:
    text = README.read_text(encoding="utf-8")
    record = json.loads(re.search(r"```json\n(.*?)```", text, re.DOTALL).group(1))  # type: ignore[union-attr]
    heading = r"\*\*2\. Create `kobo/nutrition-screening.yaml`:\*\*\n\n"
    mapping = re.search(heading + r"```yaml\n(.*?)```", text, re.DOTALL)
    assert mapping is not None
    root = mappings_dir({"kobo/nutrition-screening.yaml": mapping.group(1)}, with_shipped_sets=True)
    bundle = load_mapping_sets(root)["kobo"].map_record(record)
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds == ["Patient", "Observation", "Observation", "Provenance"]
    muac = bundle["entry"][1]["resource"]
    assert muac["valueQuantity"]["value"] == 118
    assert muac["subject"] == {"reference": f"Patient/{bundle['entry'][0]['resource']['id']}"}
