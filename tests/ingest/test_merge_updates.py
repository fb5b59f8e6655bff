"""``on_update: merge``: a form that makes a shared resource with fewer elements than the
stored version (a follow-up visit without the name) keeps the elements it leaves out, on both
store backends; the default replaces the resource whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ingest import SourceConfig
from gateway.store import Store
from tests.ingest.conftest import Harness, make_app

VISIT = """\
mapping: anc-visit
version: 1.0.0
record_id: visit_id
provenance: {{recorded: "{{{{ visited | datetime }}}}"}}
rules:
  - name: woman
    kind: resource
    resourceType: Patient
    id: case_id
    on_update: {mode}
    template:
      identifier: [{{system: "{{{{ %system }}}}:case", value: "{{{{ case_id }}}}"}}]
      name: ["{{{{ woman_name | human_name }}}}"]
      telecom: [{{system: phone, value: "{{{{ phone }}}}"}}]
      deceasedBoolean: "{{{{ deceased | boolean }}}}"
      deceasedDateTime: "{{{{ died_on | date }}}}"
"""


@pytest.fixture(params=["merge", "replace"])
async def anc(request: pytest.FixtureRequest, store: Store, mappings_copy: Path) -> AsyncIterator[Harness]:
    """The ingest app with an ``anc`` source whose Patient rule merges (or replaces), on both backends."""
    folder = mappings_copy / "anc"
    folder.mkdir()
    (folder / "set.yaml").write_text("name: anc\nsystem: urn:test:anc\n")
    (folder / "visit.yaml").write_text(VISIT.format(mode=request.param))
    app = make_app(store, mappings_copy, sources=[SourceConfig(name="anc", kind="json", mapping="anc")])
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, mappings_copy)
        harness.mode = request.param  # type: ignore[attr-defined]
        yield harness
        await harness.aclose()


async def _send(gw: Harness, record: dict[str, Any]) -> dict[str, Any]:
    response = await gw.sender.post("/ingest/anc", content=json.dumps(record).encode(),
                                    headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] in ("stored", "unchanged"), result
    (patient,) = [r for r in result["resources"] if r["type"] == "Patient"]
    read = await gw.fhir.get(f"/fhir/Patient/{patient['id']}")
    body: dict[str, Any] = read.json()
    return body


REGISTRATION = {"visit_id": "v1", "visited": "2026-01-05T10:00:00Z", "case_id": "c1", "woman_name": "Grace Atieno",
                "phone": "0700", "died_on": "2026-01-02"}
#: A later form about the same woman: no name, another phone, a choice element of another type.
FOLLOW_UP = {"visit_id": "v2", "visited": "2026-02-05T10:00:00Z", "case_id": "c1", "woman_name": "", "phone": "0711",
             "deceased": "false"}


async def test_a_follow_up_without_the_name_keeps_it_only_when_the_rule_merges(anc: Harness) -> None:
    registered = await _send(anc, REGISTRATION)
    assert registered["name"][0]["family"] == "Atieno" and registered["deceasedDateTime"] == "2026-01-02"
    follow_up = await _send(anc, FOLLOW_UP)
    assert follow_up["meta"]["versionId"] == "2"
    assert follow_up["telecom"] == [{"system": "phone", "value": "0711"}]  # what the record makes wins
    assert follow_up["deceasedBoolean"] is False
    assert "deceasedDateTime" not in follow_up  # one type of a choice element at a time
    if anc.mode == "merge":  # type: ignore[attr-defined]
        assert follow_up["name"] == registered["name"] and follow_up["identifier"] == registered["identifier"]
    else:
        assert "name" not in follow_up
    # The same follow-up again changes nothing (the merged version is what it would make).
    again = await _send(anc, FOLLOW_UP)
    assert again["meta"]["versionId"] == "2"
