"""The conformance kit run against the gateway, and against a server that lies about itself."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from rich.console import Console

from conformance.report import main, render
from conformance.search_values import NotProbed, SearchParamDef, load_definitions, probe
from conformance.suite import FAIL, PASS, SuiteError, run_suite
from tests.conformance.conftest import Served
from tests.support.gateway_app import build_gateway
from tests.support.live_server import LiveServer

# Known gateway gaps (reported to the lead): reference/uri search parameters whose
# expression lands on a canonical element find nothing.
# Checks the gateway is known to fail (none now; list (type, check) pairs here with a reason).
KNOWN_GAPS: set[tuple[str, str]] = set()


@pytest.mark.slow
def test_the_gateway_does_what_its_capability_statement_says(served: Served) -> None:
    report = run_suite(served.base, served.token)
    failures = {(r.resource_type, r.check): r.detail for r in report.failures}
    unexpected = {key: why for key, why in failures.items() if key not in KNOWN_GAPS}
    assert not unexpected, unexpected
    assert report.count(PASS) > 2000
    by_check = {(r.resource_type, r.check): r.status for r in report.results}
    for check in (
        "create",
        "read",
        "vread",
        "update",
        "patch",
        "patch (FHIRPath Patch)",
        "delete",
        "search family",
        "search identifier",
    ):
        assert by_check[("Patient", check)] == PASS, check
    assert by_check[("", "transaction")] == PASS
    assert by_check[("", "batch")] == PASS
    console = Console(record=True, width=160)
    render(report, console)
    text = console.export_text()
    assert "Checks per resource type" in text and ("PASS" in text or "FAIL" in text)


def test_probe_values_per_parameter_type() -> None:
    definitions = {(p.code, base): p for p in load_definitions() for base in p.base}
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:sys", "value": "42"}],
        "name": [{"family": "Nakamura", "given": ["Aiko"]}],
        "birthDate": "1987-04-12",
        "active": True,
        "generalPractitioner": [{"reference": "Practitioner/gp1"}],
    }
    assert probe(definitions[("identifier", "Patient")], patient).match == "urn:sys|42"
    assert probe(definitions[("family", "Patient")], patient).match == "Nakamura"
    assert probe(definitions[("birthdate", "Patient")], patient).match == "eq1987-04-12"
    assert probe(definitions[("active", "Patient")], patient).miss == "false"
    assert probe(definitions[("general-practitioner", "Patient")], patient).match == "Practitioner/gp1"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-03-01T10:00:00Z"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    assert probe(definitions[("code", "Observation")], observation).match == "http://loinc.org|8867-4"
    assert probe(definitions[("date", "Observation")], observation).match == "ge2024-03-01T10:00:00Z"
    assert probe(definitions[("value-quantity", "Observation")], observation).match == "72"
    assert probe(definitions[("patient", "Observation")], observation).match == "Patient/p1"
    with pytest.raises(NotProbed):
        probe(definitions[("encounter", "Observation")], observation)
    with pytest.raises(NotProbed):
        probe(SearchParamDef("u", "x", ("Observation",), "composite", "Observation"), observation)


def _lying_server() -> FastAPI:
    """Claims Patient search by gender but ignores every search parameter."""
    app = FastAPI()
    stored: dict[str, dict[str, Any]] = {}
    fhir = "application/fhir+json"

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        resource = {
            "type": "Patient",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {
                    "name": "gender",
                    "type": "token",
                    "definition": "http://hl7.org/fhir/SearchParameter/individual-gender",
                }
            ],
        }
        body = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2024-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{"mode": "server", "resource": [resource]}],
        }
        return JSONResponse(body, media_type=fhir)

    @app.post("/fhir/Patient")
    async def create(request: Request) -> Response:
        body = await request.json()
        body["id"] = str(len(stored) + 1)
        stored[body["id"]] = body
        return Response(status_code=201, headers={"Location": f"/fhir/Patient/{body['id']}/_history/1"})

    @app.get("/fhir/Patient/{rid}")
    def read(rid: str) -> Response:
        return JSONResponse({**stored[rid], "meta": {"versionId": "1"}}, media_type=fhir)

    @app.get("/fhir/Patient")
    def search() -> Response:
        entries = [{"resource": r, "search": {"mode": "match"}} for r in stored.values()]
        return JSONResponse(
            {"resourceType": "Bundle", "type": "searchset", "entry": entries}, media_type=fhir
        )

    return app


def test_a_server_ignoring_a_search_parameter_fails_the_suite() -> None:
    with LiveServer(_lying_server()) as server:
        report = run_suite(f"{server.url}/fhir", "token", types={"Patient"})
        console = Console(record=True, width=160)
        assert main(f"{server.url}/fhir", "token", console=console, types={"Patient"}) == 1
    results = {r.check: r for r in report.results if r.resource_type == "Patient"}
    assert results["create"].status == PASS and results["read"].status == PASS
    assert results["search gender"].status == FAIL
    assert "found the fixture, which has no such value" in results["search gender"].detail
    assert "FAIL" in console.export_text()


@pytest.mark.slow
def test_the_suite_waits_out_a_rate_limited_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import conformance.suite

    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(conformance.suite, "_wait", wait)
    gateway = build_gateway(tmp_path, rate_limit={"requests_per_second": 10, "burst": 10})
    with LiveServer(gateway.app) as server:
        report = run_suite(f"{server.url}/fhir", gateway.token, types={"Patient"})
    assert waits and set(waits) == {1.0}  # 429s were answered, with Retry-After: 1
    failed = [r for r in report.results if r.status == FAIL]
    assert failed == [] and len(report.results) > 30


def test_an_unreachable_server_cannot_be_checked() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(SuiteError):
            run_suite(f"http://127.0.0.1:{port}/fhir", "token")
        assert main(f"http://127.0.0.1:{port}/fhir", "token", console=Console(record=True)) == 2


def test_a_refused_token_stops_the_suite_at_once(tmp_path: Path) -> None:
    """Not hundreds of checks failing "expected 201, got 401", with exit 1."""
    gateway = build_gateway(tmp_path)
    with LiveServer(gateway.app) as server:
        with pytest.raises(SuiteError, match=r"refused the token \(401 to GET /Patient\): check --token"):
            run_suite(f"{server.url}/fhir", "not-a-token", types={"Patient"})
        assert main(f"{server.url}/fhir", "not-a-token", console=Console(record=True), types={"Patient"}) == 2
        assert run_suite(f"{server.url}/fhir", gateway.token, types={"Patient"}).ok


CHW_TYPES = {
    "CarePlan",
    "Condition",
    "Encounter",
    "EpisodeOfCare",
    "Immunization",
    "Location",
    "MedicationRequest",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "QuestionnaireResponse",
    "RelatedPerson",
    "ServiceRequest",
    "Task",
}


@pytest.mark.slow
def test_the_gateway_on_postgresql_passes_the_suite_for_chw_types(pg_schema_url: str, tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path, store_url=pg_schema_url)
    with LiveServer(gateway.app) as server:
        report = run_suite(f"{server.url}/fhir", gateway.token, types=CHW_TYPES)
    failures = {(r.resource_type, r.check): r.detail for r in report.failures}
    assert not {k: v for k, v in failures.items() if k not in KNOWN_GAPS}
    assert {r.resource_type for r in report.results if r.status == PASS} >= CHW_TYPES


def test_the_suite_leaves_no_resources_of_its_own_behind(tmp_path: Path) -> None:
    """`gateway conformance run` against a live server deletes what it wrote, the transaction and batch
    checks' Patients and Observation included: they would stay as real records (delivered to the
    destinations, notified to subscribers)."""
    import httpx

    gateway = build_gateway(tmp_path)
    with LiveServer(gateway.app) as server:
        report = run_suite(f"{server.url}/fhir", gateway.token, types={"Patient", "Observation"})
        assert report.ok, [r for r in report.results if r.status == FAIL]
        assert {r.check for r in report.results} >= {"transaction", "batch"}
        headers = {"Authorization": f"Bearer {gateway.token}"}
        count = {"_summary": "count"}
        left = {
            rtype: httpx.get(f"{server.url}/fhir/{rtype}", params=count, headers=headers).json()["total"]
            for rtype in ("Patient", "Observation")
        }
    assert left == {"Patient": 0, "Observation": 0}
