"""What real FHIR client libraries (fhirclient, fhirpy, fhir-kit-client) send, as the spec defines it."""

from __future__ import annotations

from tests.conftest import ApiHarness


async def test_metadata_takes_every_mode_r4_defines(api: ApiHarness) -> None:
    # http.html#capabilities: mode is full, normative or terminology ("servers MAY ignore the mode
    # parameter and return a CapabilityStatement"); normative asks for the statement's normative parts.
    anonymous = api.anonymous()
    full = (await anonymous.get("/fhir/metadata")).json()
    normative = await anonymous.get("/fhir/metadata", params={"mode": "normative"})
    assert normative.status_code == 200, normative.text
    assert normative.json() == full
    refused = (await anonymous.get("/fhir/metadata", params={"mode": "brief"})).json()
    assert "full, normative or terminology" in refused["issue"][0]["diagnostics"]
