"""Configuring an OpenMRS destination: bad options and missing ConceptMaps fail at start, naming the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.clock import ManualClock
from gateway.connectors import DeliveryConfigError
from gateway.connectors.openmrs import OpenMrsConnector
from gateway.delivery.config import DestinationConfig
from gateway.delivery.factory import default_factories, fhir_connector
from gateway.store import Store
from tests.openmrs.conftest import MAPPINGS


def openmrs(**options: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({
        "name": "emr", "kind": "fhir", "base_url": "http://emr/openmrs/ws/fhir2/R4",
        "options": {"profile": "openmrs", "conceptmaps": str(MAPPINGS / "openmrs" / "conceptmaps"), **options},
    })  # fmt: skip


def build(store: Store, destination: DestinationConfig) -> Any:
    return default_factories(store)["fhir"](destination, client=httpx.AsyncClient(), clock=ManualClock())


def test_the_profile_builds_an_openmrs_connector(sqlite_store: Store) -> None:
    assert isinstance(build(sqlite_store, openmrs(upsert=["Task"])), OpenMrsConnector)


@pytest.mark.parametrize(("options", "message"), [
    ({"upsert": ["Patient"]}, "can upsert only"),
    ({"encounter_types": "nope"}, "encounter_types (nope)"),
    ({"conceptmaps": "/nonexistent"}, "no ConceptMap"),
    ({"colour": "blue"}, "colour"),
])  # fmt: skip
def test_bad_options_fail_naming_the_problem(sqlite_store: Store, options: dict[str, Any], message: str) -> None:
    with pytest.raises(DeliveryConfigError, match="destination emr") as raised:
        build(sqlite_store, openmrs(**options))
    assert message in str(raised.value)


def test_a_broken_conceptmap_names_its_file(sqlite_store: Store, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("resourceType: ConceptMap\nid: x\nstatus: nonsense\n")
    with pytest.raises(DeliveryConfigError, match="bad.yaml"):
        build(sqlite_store, openmrs(conceptmaps=str(tmp_path)))


def test_the_profile_needs_the_store() -> None:
    with pytest.raises(DeliveryConfigError, match="needs the store"):
        fhir_connector(openmrs(), client=httpx.AsyncClient(), clock=ManualClock())


def test_config_check_names_a_bad_openmrs_option() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    destination = {"name": "emr", "kind": "fhir", "base_url": "http://emr/openmrs/ws/fhir2/R4",
                   "options": {"profile": "openmrs", "upsert": ["Encounter"]}}  # fmt: skip
    with pytest.raises(ValidationError, match="destination emr: options.upsert"):
        Settings(destinations=[destination])
    assert Settings(destinations=[{**destination, "options": {"profile": "openmrs"}}]).destinations[0].name == "emr"
