"""``gateway identity review …`` against a real store: list with evidence, accept, reject, merge, unmerge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from gateway.cli.identity import identity_app
from gateway.identity import IdentityEngine, load_rules_dir
from gateway.search import QueryParser, default_registry
from gateway.store import open_store
from tests.ingest.conftest import MAPPINGS

runner = CliRunner()
TWIN = {"resourceType": "Patient", "gender": "female", "birthDate": "2022-11-03",
        "telecom": [{"system": "phone", "value": "+256772000111"}]}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GATEWAY_CONFIG", "GATEWAY_STORE_URL", "GATEWAY_MAPPINGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(f"store_url: sqlite:///{tmp_path}/cli.db\nmappings_dir: {MAPPINGS}\nidentity:\n  enabled: true\n")
    return path


def _twins(config: Path) -> tuple[str, str]:
    store = open_store(f"sqlite:///{config.parent}/cli.db")
    try:
        with store.transaction() as tx:
            ids = [tx.create({**TWIN, "name": [{"family": "Nakato", "given": [given]}]}).resource.id
                   for given in ("Aisha", "Amina")]
        rules = load_rules_dir(MAPPINGS / "identity")
        assert rules is not None
        IdentityEngine(store, rules).catch_up()
        return ids[0], ids[1]
    finally:
        store.close()


def _read(config: Path, rtype: str, rid: str) -> dict[str, Any]:
    store = open_store(f"sqlite:///{config.parent}/cli.db")
    try:
        found = store.read(rtype, rid)
        assert found is not None
        body: dict[str, Any] = orjson.loads(found.content)
        return body
    finally:
        store.close()


def _run(config: Path, *args: str) -> str:
    result = runner.invoke(identity_app, ["review", *args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def test_review_list_show_accept_reject_merge_unmerge(config: Path) -> None:
    aisha, amina = _twins(config)
    (line,) = _run(config, "list", "--json").splitlines()
    pair = json.loads(line)
    assert {e["field"]: e["level"] for e in pair["evidence"]}["given"] == "different"
    table = _run(config, "list")
    assert "Aisha" in table and "Amina" in table and "different" in table
    assert "birthdate" in _run(config, "show", pair["id"])

    accepted = _run(config, "accept", pair["id"], "--by", "nurse-ana")
    assert "link: recorded by Provenance/" in accepted
    provenance = _read(config, "Provenance", accepted.split("Provenance/")[1].split()[0])
    assert provenance["agent"][0]["who"]["display"] == "nurse-ana"
    assert amina in json.dumps(_read(config, "Patient", aisha)["link"])
    assert "unlink" in _run(config, "reject", pair["id"])
    assert amina not in json.dumps(_read(config, "Patient", aisha)["link"])

    before = _read(config, "Patient", amina)
    assert "merge" in _run(config, "merge", aisha, amina)
    assert '"replaced-by"' in json.dumps(_read(config, "Patient", amina)["link"])
    assert "unmerge" in _run(config, "unmerge", amina)
    after = _read(config, "Patient", amina)
    assert {**after, "meta": {}} == {**before, "meta": {}}

    assert "link: recorded" in _run(config, "accept", pair["id"])
    assert "unlink: recorded" in _run(config, "unlink", amina, aisha)
    assert amina not in json.dumps(_read(config, "Patient", aisha)["link"])
    refused = runner.invoke(identity_app, ["review", "unmerge", amina, "--config", str(config)])
    assert refused.exit_code == 1 and "not merged" in refused.output
    store = open_store(f"sqlite:///{config.parent}/cli.db")
    try:
        query = QueryParser(default_registry(), 100, 100).parse("AuditEvent", [("patient", f"Patient/{amina}")])
        codes = [orjson.loads(r.content)["subtype"][0]["code"] for r in store.search(query).resources]
    finally:
        store.close()
    assert sorted(codes) == ["identity-accept", "identity-accept", "identity-merge", "identity-reject",
                             "identity-unlink", "identity-unmerge", "identity-unmerge"]  # the refused one too


def test_review_needs_identity_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(f"store_url: sqlite:///{tmp_path}/x.db\nmappings_dir: {MAPPINGS}\n")
    result = runner.invoke(identity_app, ["review", "list", "--config", str(path)])
    assert result.exit_code == 2 and "identity.enabled" in result.output


def test_patients_may_be_named_as_references(config: Path) -> None:
    """``merge Patient/a Patient/b`` (as `$everything`, the review table's Task and the FHIR API
    name them) was refused as "Patient/Patient/a does not exist"."""
    aisha, amina = _twins(config)
    assert "merge: recorded" in _run(config, "merge", f"Patient/{aisha}", f"Patient/{amina}")
    assert '"replaced-by"' in json.dumps(_read(config, "Patient", amina)["link"])
    assert "unmerge: recorded" in _run(config, "unmerge", f"Patient/{amina}")
    assert "unlink: recorded" in _run(config, "unlink", f"Patient/{amina}", f"Patient/{aisha}")
    refused = runner.invoke(identity_app, ["review", "unmerge", "Patient/nobody", "--config", str(config)])
    assert refused.exit_code == 1 and "Patient/nobody does not exist" in refused.output, refused.output
    assert "Patient/Patient/" not in refused.output
