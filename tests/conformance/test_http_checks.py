"""fhir.md §6 A–C: capabilities, content negotiation, read, versions, create, update, delete.

Every response also passes the oracles of the ``fhir`` fixture (OperationOutcome on
errors, R4 JSON schema on bodies, never a 5xx).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fhirclient.models.capabilitystatement import CapabilityStatement

from tests.conformance.conftest import Served

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
FHIR_JSON = "application/fhir+json"


def new_patient(**fields: Any) -> dict[str, Any]:
    system = f"urn:test:http:{uuid.uuid4().hex}"
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": "1"}], **fields}


def create(fhir: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = fhir.post(
        f"/{resource['resourceType']}", json=resource, headers={"Prefer": "return=representation"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def media(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip()


# -- A. capabilities and content negotiation ------------------------------------------


def test_1_metadata_is_a_capability_statement(fhir: httpx.Client) -> None:
    response = fhir.get("/metadata")
    assert response.status_code == 200 and media(response) == FHIR_JSON
    body = response.json()
    assert body["status"] and body["date"] and body["kind"] == "instance"
    assert body["fhirVersion"] == "4.0.1" and any("json" in f for f in body["format"])
    assert body["rest"][0]["mode"] == "server"
    CapabilityStatement(body)  # the strict SMART model parses it


def test_3_plain_json_accept_is_answered_with_json(fhir: httpx.Client) -> None:
    assert media(fhir.get("/metadata", headers={"Accept": "application/json"})) == "application/json"
    created = create(fhir, new_patient())
    response = fhir.get(f"/Patient/{created['id']}", headers={"Accept": "application/json"})
    assert response.status_code == 200 and media(response) == "application/json"


@pytest.mark.parametrize("content_type", [FHIR_JSON, f"{FHIR_JSON}; charset=utf-8", "application/json"])
def test_4_json_content_types_are_accepted(fhir: httpx.Client, content_type: str) -> None:
    body = json.dumps(new_patient()).encode()
    assert fhir.post("/Patient", content=body, headers={"Content-Type": content_type}).status_code == 201


def test_5_unsupported_formats_are_refused_cleanly(fhir: httpx.Client) -> None:
    body = json.dumps(new_patient()).encode()
    assert fhir.post("/Patient", content=body, headers={"Content-Type": "text/plain"}).status_code == 415
    assert fhir.get("/metadata", params={"_format": "xml"}).status_code in (406, 415)


# -- B. read, versions, delete ------------------------------------------------------------


def test_6_read_has_id_meta_etag_and_last_modified(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient())
    response = fhir.get(f"/Patient/{created['id']}")
    body = response.json()
    assert response.status_code == 200 and body["id"] == created["id"]
    assert body["meta"]["versionId"] and body["meta"]["lastUpdated"]
    assert response.headers["etag"] == f'W/"{body["meta"]["versionId"]}"'
    assert response.headers.get("last-modified")


def test_7_unknown_ids_and_types_answer_with_an_operation_outcome(fhir: httpx.Client) -> None:
    missing = fhir.get(f"/Patient/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    assert fhir.get("/Foo/1").status_code in (400, 404)
    assert fhir.get("/no/such/route/at/all").status_code in (400, 404)


@pytest.mark.parametrize("rid", ["x" * 65, "a_b!"])
def test_8_illegal_ids_are_refused(fhir: httpx.Client, rid: str) -> None:
    assert fhir.get(f"/Patient/{rid}").status_code in (400, 404)


def test_9_vread(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient(active=True))
    updated = {**created, "active": False}
    assert fhir.put(f"/Patient/{created['id']}", json=updated).status_code == 200
    first = fhir.get(f"/Patient/{created['id']}/_history/1")
    assert first.status_code == 200 and first.json()["active"] is True
    assert fhir.get(f"/Patient/{created['id']}/_history/99").status_code == 404


def test_10_delete_then_read_is_gone_and_search_misses_it(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient())
    assert fhir.delete(f"/Patient/{created['id']}").status_code in (200, 204)
    assert fhir.get(f"/Patient/{created['id']}").status_code == 410
    assert fhir.get("/Patient", params={"_id": created["id"]}).json().get("entry", []) == []


# -- C. create and update ------------------------------------------------------------------


def test_11_create_assigns_an_id_and_answers_with_location(fhir: httpx.Client, served: Served) -> None:
    response = fhir.post("/Patient", json=new_patient(id="client-chosen"))
    assert response.status_code == 201 and response.headers.get("etag")
    location = response.headers["location"]
    match = re.fullmatch(re.escape(served.base) + r"/Patient/([^/]+)/_history/([^/]+)", location)
    assert match, location
    assert ID.match(match.group(1)) and match.group(1) != "client-chosen"


def test_12_prefer_return(fhir: httpx.Client) -> None:
    minimal = fhir.post("/Patient", json=new_patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    full = fhir.post("/Patient", json=new_patient(), headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"
    typo = fhir.post("/Patient", json=new_patient(), headers={"Prefer": "return=presentation"})  # SMART-JS
    assert typo.status_code == 201


def test_13_body_type_must_match_the_url(fhir: httpx.Client) -> None:
    system = f"urn:test:http:{uuid.uuid4().hex}"
    body = {"resourceType": "Observation", "identifier": [{"system": system, "value": "1"}]}
    assert fhir.post("/Patient", json=body).status_code == 400
    assert fhir.get("/Observation", params={"identifier": f"{system}|"}).json().get("total", 0) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType": "Patient", "active": true',  # bad-json-close
        b'{"resourceType": "Patient",, "active": true}',  # json-comma-bad
        b"{resourceType: 'Patient'}",  # json-no-quotes
        b'{"resourceType": "Patient", /* comment */ "active": true}',  # json-comments
        b'{"resourceType": "Patient", "nickname": "x"}',  # ai3: unknown element
        b'{"resourceType": "Patient", "birthDate": "1974-13-45"}',  # ai4: invalid date
        b'{"resourceType": "Patient", "name": {"family": "x"}}',  # synthea: object for an array
        b'{"resourceType": "Patient", "id": "a_b"}',  # resource-invalid-id
        b'{"resourceType": "Patient", "photo": [{"data": "@@@"}]}',  # attachment-with-invalid-binary
        b'{"resourceType": "Patient", "fhir_comments": ["x"]}',  # comments-4
        b"[]",
        b"",
    ],
)
def test_14_structurally_invalid_bodies_are_400(fhir: httpx.Client, body: bytes) -> None:
    response = fhir.post("/Patient", content=body, headers={"Content-Type": FHIR_JSON})
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize("fields", [{"active": "true"}, {"active": None}, {"name": []}, {"gender": "dog"}])
def test_15_strict_fhir_json(fhir: httpx.Client, fields: dict[str, Any]) -> None:
    assert fhir.post("/Patient", json=new_patient(**fields)).status_code == 400


def test_16_primitive_extensions_and_non_ascii_round_trip(fhir: httpx.Client) -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "ÿ"}]}
    given_ext = {"extension": [{"url": "http://example.org/y", "valueCode": "a"}]}
    name = {"family": "Zoë", "given": ["Ñandú", None], "_given": [None, given_ext]}
    sent = new_patient(birthDate="1970", _birthDate=ext, name=[name])
    created = create(fhir, sent)
    read = fhir.get(f"/Patient/{created['id']}").json()
    assert {k: v for k, v in read.items() if k not in ("id", "meta")} == sent


def test_16_extension_on_an_extension_value_round_trips(fhir: httpx.Client) -> None:
    ext = {"url": "http://example.org/x", "valueString": "hallo", "_valueString": {"id": "v"}}
    sent = new_patient(extension=[ext])
    response = fhir.post("/Patient", json=sent, headers={"Prefer": "return=representation"})
    assert response.status_code == 201
    read = fhir.get(f"/Patient/{response.json()['id']}").json()
    assert {k: v for k, v in read.items() if k not in ("id", "meta")} == sent


def test_17_update_changes_version_and_checks_ids(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient())
    response = fhir.put(f"/Patient/{created['id']}", json={**created, "active": True})
    assert response.status_code == 200
    assert response.headers["etag"] != 'W/"1"'
    assert fhir.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] != "1"
    assert fhir.put(f"/Patient/{created['id']}", json={**created, "id": "other"}).status_code == 400
    no_id = {k: v for k, v in created.items() if k != "id"}
    assert fhir.put(f"/Patient/{created['id']}", json=no_id).status_code == 400


def test_18_update_as_create_matches_the_capability_statement(fhir: httpx.Client) -> None:
    capability = fhir.get("/metadata").json()
    patient = next(r for r in capability["rest"][0]["resource"] if r["type"] == "Patient")
    rid = f"new-{uuid.uuid4().hex[:12]}"
    response = fhir.put(f"/Patient/{rid}", json=new_patient(id=rid))
    if patient.get("updateCreate"):
        assert response.status_code == 201
        assert fhir.get(f"/Patient/{rid}").json()["id"] == rid
    else:
        assert 400 <= response.status_code < 500


def test_19_if_match(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient(active=True))
    url = f"/Patient/{created['id']}"
    assert fhir.put(url, json={**created, "active": False}, headers={"If-Match": 'W/"1"'}).status_code == 200
    stale = fhir.put(url, json={**created, "active": True}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert fhir.get(url).json()["active"] is False


def test_20_conditional_create(fhir: httpx.Client) -> None:
    system = f"urn:test:http:{uuid.uuid4().hex}"
    body = {"resourceType": "Patient", "identifier": [{"system": system, "value": "v1"}]}
    headers = {"If-None-Exist": f"identifier={system}|v1"}
    first = fhir.post("/Patient", json=body, headers=headers)
    second = fhir.post("/Patient", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.headers["location"].split("/_history")[0] == second.headers["location"].split("/_history")[0]
    assert fhir.get("/Patient", params={"identifier": f"{system}|v1"}).json()["total"] == 1
    fhir.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system, "value": "v2"}]})
    fhir.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system, "value": "v2"}]})
    several = fhir.post("/Patient", json=body, headers={"If-None-Exist": f"identifier={system}|v2"})
    assert several.status_code == 412


def test_21_conditional_update(fhir: httpx.Client) -> None:
    system = f"urn:test:http:{uuid.uuid4().hex}"
    body = {"resourceType": "Patient", "identifier": [{"system": system, "value": "v"}]}
    first = fhir.put("/Patient", params={"identifier": f"{system}|v"}, json=body)
    second = fhir.put("/Patient", params={"identifier": f"{system}|v"}, json={**body, "active": True})
    assert (first.status_code, second.status_code) == (201, 200)
    assert fhir.get("/Patient", params={"identifier": f"{system}|"}).json()["total"] == 1


def test_22_json_patch(fhir: httpx.Client) -> None:
    created = create(fhir, new_patient(active=True))
    url = f"/Patient/{created['id']}"
    patch = {"Content-Type": "application/json-patch+json"}
    ok = fhir.patch(url, json=[{"op": "replace", "path": "/active", "value": False}], headers=patch)
    assert ok.status_code == 200 and fhir.get(url).json()["active"] is False
    failing = [{"op": "test", "path": "/active", "value": True}, {"op": "remove", "path": "/active"}]
    assert 400 <= fhir.patch(url, json=failing, headers=patch).status_code < 500
    merge = fhir.patch(
        url, json={"active": True}, headers={"Content-Type": "application/json"}
    )  # fhirpy style
    assert 400 <= merge.status_code < 500 or merge.status_code == 200
