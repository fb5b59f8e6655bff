"""Authorisation bugs the permission matrix and the scoped fuzzers found (issue 11).

* System history enumerates every type: SMART v2 puts it under ``s``, so it needs
  ``system/*.s``; ``system/*.r`` (read by id) no longer lets a client list everything.
* A client allowed to update (``u``) but not read a type got the stored resource back
  from a JSON Patch — in the response body, and in 422 messages that quoted stored values
  (``member 'x' not found in {...}``, ``1970-01-01 is not equal to ...``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway.settings import Settings
from tests.api.test_fhir_api import assert_outcome
from tests.conftest import ApiHarness

SECRET = "SECRET-7f3a"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": SECRET}], "birthDate": "1970-01-01"}
PATCH_JSON = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The API on each store backend."""
    return Settings(store_url=store_url, allowed_hosts=["gateway.test"])


async def test_system_history_needs_search_on_every_type(api: ApiHarness) -> None:
    assert (await api.client.put("/fhir/Patient/p1", json=PATIENT)).status_code == 201
    for scopes in (("system/*.r",), ("system/Patient.rs",), ("system/*.cud",)):
        body = assert_outcome(await api.with_scopes(*scopes).get("/fhir/_history"), 403, "forbidden")
        assert "system/*.s" in body["issue"][0]["diagnostics"]
    for scopes in (("system/*.s",), ("system/*.read",)):
        response = await api.with_scopes(*scopes).get("/fhir/_history")
        # The Patient and the Provenance naming the client that wrote it.
        assert response.status_code == 200 and response.json()["total"] == 2


def _binary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


async def test_a_client_that_cannot_read_may_not_patch(api: ApiHarness) -> None:
    # Whether a patch applies, and whether it leaves a valid resource, tells what is stored: adding
    # a period end that fails per-1 bounds the stored start, and a binary search finds it, even
    # inside a transaction another entry rolls back. Such a client replaces the resource whole.
    stored = {**PATIENT, "name": [{"family": SECRET, "period": {"start": "2024-03-15"}}]}
    assert (await api.client.put("/fhir/Patient/p1", json=stored)).status_code == 201
    writer = api.with_scopes("system/Patient.u")
    probes: list[list[dict[str, Any]]] = [[{"op": "add", "path": "/name/0/period/end", "value": day}]
                                          for day in ("2024-03-10", "2024-03-20")]
    for ops in [[{"op": "add", "path": "/active", "value": True}], *probes]:
        response = await writer.patch("/fhir/Patient/p1", json=ops, headers=PATCH_JSON)
        assert_outcome(response, 403, "forbidden")
        assert "PUT" in response.json()["issue"][0]["diagnostics"] and SECRET not in response.text
        entries = [{"resource": _binary(ops), "request": {"method": "PATCH", "url": "Patient/p1"}},
                   {"resource": _binary(ops), "request": {"method": "PATCH", "url": "Patient/nobody"}}]
        answers = []
        for kind in ("batch", "transaction"):
            answer = await writer.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries})
            assert SECRET not in answer.text
            answers.append(answer)
        assert answers[0].json()["entry"][0]["response"]["status"].startswith("403")
        assert answers[1].status_code == 403 and "Bundle.entry[0]" in answers[1].text
    assert (await api.client.get("/fhir/Patient/p1")).headers["etag"] == 'W/"1"'  # nothing written
    # A client that may read the type patches and gets the patched resource.
    reader = api.with_scopes("system/Patient.ru")
    response = await reader.patch("/fhir/Patient/p1", json=probes[1], headers=PATCH_JSON)
    assert response.status_code == 200 and response.json()["name"][0]["period"]["end"] == "2024-03-20"
    entry = {"resource": _binary([{"op": "add", "path": "/active", "value": True}]),
             "request": {"method": "PATCH", "url": "Patient/p1"}}
    answer = await reader.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert answer.json()["entry"][0]["resource"]["name"][0]["family"] == SECRET


async def test_an_update_returns_nothing_stored_to_a_client_that_cannot_read(api: ApiHarness) -> None:
    # The stored version keeps what the gateway wrote onto it (a DHIS2 UID, an identity link),
    # which the client did not send.
    kept = {"type": {"coding": [{"system": "urn:chw-gateway:identifier-type", "code": "dhis2-uid"}]},
            "system": "https://dhis2.test/api/tracker/trackedEntities", "value": SECRET}
    assert (await api.client.put("/fhir/Patient/p1", json={**PATIENT, "identifier": [kept]})).status_code == 201
    writer = api.with_scopes("system/Patient.u")
    sent = {"resourceType": "Patient", "id": "p1", "active": True}
    response = await writer.put("/fhir/Patient/p1", json=sent)
    assert response.status_code == 200 and response.content == b"" and response.headers["etag"] == 'W/"2"'
    entry = {"resource": sent, "request": {"method": "PUT", "url": "Patient/p1"}}
    for kind in ("batch", "transaction"):
        answer = await writer.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": [entry]})
        assert answer.status_code == 200 and SECRET not in answer.text, answer.text
        assert answer.json()["entry"][0]["response"]["status"].startswith("200")
    # A client that may read the type still gets the stored version, kept identifier included.
    response = await api.with_scopes("system/Patient.ru").put("/fhir/Patient/p1", json=sent)
    assert response.status_code == 200 and response.json()["identifier"] == [kept]


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/name/0/nothing/x", "value": 1}],
        [{"op": "add", "path": "/name/0/nothing/x", "value": 1}],
        [{"op": "test", "path": "/birthDate", "value": "1999-01-01"}],
    ],
    ids=["replace", "add", "test"],
)
async def test_patch_failures_quote_no_stored_value(api: ApiHarness, ops: list[dict[str, Any]]) -> None:
    # jsonpatch's own messages quote the document ("member 'x' not found in {...}").
    assert (await api.client.put("/fhir/Patient/p1", json=PATIENT)).status_code == 201
    response = await api.with_scopes("system/Patient.ru").patch("/fhir/Patient/p1", json=ops, headers=PATCH_JSON)
    body = assert_outcome(response, 422, "processing")
    assert SECRET not in response.text and "1970" not in response.text and "family" not in response.text, body


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/name/0/family", "value": SECRET}],
        [{"op": "test", "path": "/name/0/family", "value": "a guess"}],
        [{"op": "copy", "from": "/name/0", "path": "/managingOrganization"}],
        [{"op": "move", "from": "/name/0/family", "path": "/language"}],
        [{"op": "add", "path": "/active", "value": True}, {"op": "test", "path": "/birthDate", "value": "1970"}],
    ],
    ids=["test-right", "test-wrong", "copy", "move", "test-after-add"],
)
async def test_a_client_that_cannot_read_may_not_test_copy_or_move(api: ApiHarness, ops: list[dict[str, Any]]) -> None:
    assert (await api.client.put("/fhir/Patient/p1", json=PATIENT)).status_code == 201
    writer = api.with_scopes("system/Patient.u")
    response = await writer.patch("/fhir/Patient/p1", json=ops, headers=PATCH_JSON)
    assert_outcome(response, 403, "forbidden")  # the same answer whatever is stored: no oracle
    assert SECRET not in response.text
    entry = {"resource": _binary(ops), "request": {"method": "PATCH", "url": "Patient/p1"}}
    batch = await writer.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert batch.json()["entry"][0]["response"]["status"].startswith("403")
    assert (await api.client.get("/fhir/Patient/p1")).headers["etag"] == 'W/"1"'  # nothing written
    # A client that may read the type tests as JSON Patch says.
    reader = api.with_scopes("system/Patient.ru")
    passing = await reader.patch("/fhir/Patient/p1", json=[{"op": "test", "path": "/name/0/family", "value": SECRET}],
                                 headers=PATCH_JSON)  # fmt: skip
    assert passing.status_code == 200
