"""Golden records, review and merge over HTTP, on both store backends (README "Identity")."""

from __future__ import annotations

from typing import Any

from gateway.identity import REVIEW_TASK_CODE
from gateway.store import GOLDEN_TAG_SYSTEM
from tests.identity.conftest import cht_person, commcare_case
from tests.identity.test_identity_http import WILFRID_ON_CHT, _ingest, _patient, _patient_id
from tests.ingest.conftest import Harness

REVIEWS = f"urn:chw-gateway:task|{REVIEW_TASK_CODE}"


def _links(patient: dict[str, Any], kind: str) -> list[str]:
    return [link["other"]["reference"].partition("/")[2] for link in patient.get("link", []) if link["type"] == kind]


def _golden_of(patient: dict[str, Any]) -> str:
    (golden,) = _links(patient, "refer")
    return golden


async def _goldens(gw: Harness) -> list[dict[str, Any]]:
    found = (await gw.fhir.get("/fhir/Patient", params={"_tag": f"{GOLDEN_TAG_SYSTEM}|golden", "active": "true"})).json()
    return [e["resource"] for e in found.get("entry", [])]


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**resource, "meta": meta}


async def test_one_person_from_commcare_and_cht_has_one_golden_record(gw: Harness) -> None:
    commcare = _patient_id(await _ingest(gw, "commcare", commcare_case()))
    cht = _patient_id(await _ingest(gw, "cht", cht_person(**WILFRID_ON_CHT)))
    first, second = await _patient(gw, commcare), await _patient(gw, cht)
    golden_id = _golden_of(first)
    assert _golden_of(second) == golden_id
    golden = await _patient(gw, golden_id)
    assert golden["meta"]["tag"][0]["system"] == GOLDEN_TAG_SYSTEM and golden["active"] is True
    assert sorted(_links(golden, "seealso")) == sorted([commcare, cht])
    # survivorship: identifiers are the union of both records', the birth date is the full one
    assert {i["value"] for i in golden["identifier"]} >= {i["value"] for i in first["identifier"]} | {
        i["value"] for i in second["identifier"]}
    assert golden["birthDate"] == "1979-08-21"
    assert [g["id"] for g in await _goldens(gw)] == [golden_id]
    print(golden)
