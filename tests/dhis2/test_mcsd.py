"""The mCSD pull: DHIS2 org units → FHIR Location + Organization in the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class
from typer.testing import CliRunner

from dhis2_sandbox import SandboxServer
from gateway.cli.dhis2 import dhis2_app
from gateway.connectors.dhis2.mapping_spec import OrgUnitTable
from gateway.connectors.dhis2.mcsd import org_units_to_fhir, resource_id, sync_org_units
from gateway.connectors.dhis2.orgunits import ORG_UNIT_SYSTEM, OrgUnitResolver
from gateway.connectors.dhis2.sources import ResourceBundle, StoreResourceSource
from gateway.store import open_store
from tests.dhis2.conftest import TOKEN
from tests.dhis2.samples import load_sample
from tests.sandbox.conftest import Demo


def test_recorded_org_units_become_valid_locations_and_organizations() -> None:
    units = load_sample("metadata-organisationUnits-list.json")["organisationUnits"]
    resources = org_units_to_fhir(units, today=datetime(2030, 1, 1, tzinfo=UTC))
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    by_id = {(r["resourceType"], r["id"]): r for r in resources}
    ngelehun = by_id[("Location", resource_id("DiszpKrYNg8"))]
    assert ngelehun["status"] == "inactive"  # closedDate 2025-05-22
    assert ngelehun["partOf"] == {"reference": f"Location/{resource_id('YuQRtpLP10I')}"}
    badjia = by_id[("Location", resource_id("YuQRtpLP10I"))]
    assert badjia["position"] == {"longitude": -11.618041992187502, "latitude": 9.508486893003065}
    assert badjia["type"][0]["coding"][0]["code"] == "jurisdiction"
    assert {"system": ORG_UNIT_SYSTEM, "value": "g8upMTyEZGZ", "use": "official"} in by_id[
        ("Organization", resource_id("g8upMTyEZGZ"))
    ]["identifier"]


def test_pulled_locations_resolve_back_without_a_table() -> None:
    units = load_sample("metadata-organisationUnits-list.json")["organisationUnits"]
    bundle = ResourceBundle(org_units_to_fhir(units))
    household = {
        "resourceType": "Location",
        "id": "hh",
        "partOf": {"reference": f"Location/{resource_id('g8upMTyEZGZ')}"},
    }
    bundle.add(household)
    resolver = OrgUnitResolver(OrgUnitTable(kind="dhis2-org-units"), bundle)
    assert resolver.resolve("Location/hh") == "g8upMTyEZGZ"
    assert resolver.resolve("Location/unknown") is None


def test_the_cli_keeps_the_store_up_to_date(
    sandbox: SandboxServer, demo: Demo, tmp_path: Path, monkeypatch: object
) -> None:
    token = tmp_path / "pat"
    token.write_text(TOKEN)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store_url: sqlite:///{tmp_path}/store.db\n")
    args = ["org-units", "pull", sandbox.base_url, "--token-file", str(token), "--config", str(config)]
    first = CliRunner().invoke(dhis2_app, args)
    assert first.exit_code == 0, first.output
    assert "9 org units, 18 Location/Organization resources written" in first.output
    second = CliRunner().invoke(dhis2_app, args)
    assert "0 Location/Organization resources written" in second.output
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    try:
        found = StoreResourceSource(store).find(
            "Location", "identifier", f"{ORG_UNIT_SYSTEM}|{demo.ou('CU_KISIWA')}"
        )
        assert [f["name"] for f in found] == ["Kisiwa Community Unit"]
        assert sync_org_units(store, []) == 0
    finally:
        store.close()
