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


async def test_everything_takes_the_general_parameters_pretty_and_format(api: ApiHarness) -> None:
    # http.html#parameters: _format and _pretty are for every interaction; HAPI's client sends
    # _pretty=true on each request once pretty printing is on, $everything included.
    c = api.client
    await c.put("/fhir/Patient/gp1", json={"resourceType": "Patient", "id": "gp1"})
    for params in ({"_pretty": "true"}, {"_pretty": "false", "_format": "json"}):
        response = await c.get("/fhir/Patient/gp1/$everything", params=params)
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["resource"]["id"] == "gp1"
