"""The FHIR REST API over HTTP (in-process ASGI), as clients use it."""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.api.context import BASE_URL_CACHE_SIZE, CAPABILITY_CACHE_SIZE
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.settings import Settings
from gateway.store import open_store
from tests.conftest import ApiHarness, make_token

FHIR_JSON = "application/fhir+json"


def assert_outcome(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    if code is not None:
        assert body["issue"][0]["code"] == code
    return body


async def test_metadata_is_public_and_honest(api: ApiHarness) -> None:
    response = await api.anonymous().get("/fhir/metadata")
    assert response.status_code == 200 and response.headers["content-type"].startswith(FHIR_JSON)
    cs = response.json()
    assert cs["fhirVersion"] == "4.0.1" and cs["kind"] == "instance" and cs["status"] == "active"
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert len(resources) == 146
    patient = {p["name"] for p in resources["Patient"]["searchParam"]}
    assert {"identifier", "family", "birthdate", "address-district", "_lastUpdated"} <= patient
    assert {"patient", "code", "date", "value-quantity"} <= {p["name"] for p in resources["Observation"]["searchParam"]}
    for mode in ("full", "normal"):
        assert (await api.anonymous().get("/fhir/metadata", params={"mode": mode})).json() == cs
    terminology = await api.anonymous().get("/fhir/metadata", params={"mode": "terminology"})
    assert "no terminology service" in assert_outcome(terminology, 400, "not-supported")["issue"][0]["diagnostics"]
    assert_outcome(await api.anonymous().get("/fhir/metadata", params={"mode": "brief"}), 400, "invalid")



async def test_metadata_lists_the_revincludes_that_work(api: ApiHarness) -> None:
    # capabilitystatement.html: searchRevInclude is "a list of _revinclude (reverse include) values
    # supported by the server"; a client (Inferno's Provenance:target checks) reads its absence as none.
    cs = (await api.anonymous().get("/fhir/metadata")).json()
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert {"Observation:subject", "Observation:patient", "Provenance:target", "Encounter:subject"} <= set(
        resources["Patient"]["searchRevInclude"])
    assert "Observation:subject" not in resources["Organization"]["searchRevInclude"]  # never an Organization
    parser = QueryParser(default_registry(), 50, 1000)
    for rtype, resource in resources.items():
        for value in resource.get("searchRevInclude", []):
            assert parser.parse(rtype, [("_revinclude", value)]).revincludes, (rtype, value)
    c = api.client
    assert (await c.put("/fhir/Patient/ri", json={"resourceType": "Patient", "id": "ri"})).status_code == 201
    await c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                            "subject": {"reference": "Patient/ri"}})
    found = (await c.get("/fhir/Patient", params={"_id": "ri", "_revinclude": "Observation:subject"})).json()
    assert [e["search"]["mode"] for e in found["entry"]] == ["match", "include"]

async def test_a_revoked_token_gets_401_within_a_second(api: ApiHarness) -> None:
    token = make_token(api.store, ("system/Patient.rs",), name="emr")
    client = api.with_scopes(token=token)
    assert (await client.get("/fhir/Patient")).status_code == 200  # now cached
    assert api.store.revoke_client("emr")
    await asyncio.sleep(1.05)
    body = assert_outcome(await client.get("/fhir/Patient"), 401, "login")
    assert "not valid" in body["issue"][0]["diagnostics"]


async def test_authentication_and_scopes(api: ApiHarness) -> None:
    assert_outcome(await api.anonymous().get("/fhir/Patient"), 401, "login")
    reader = api.with_scopes("system/Patient.rs")
    assert (await reader.get("/fhir/Patient")).status_code == 200
    assert_outcome(await reader.post("/fhir/Patient", json={"resourceType": "Patient"}), 403, "forbidden")
    assert_outcome(await reader.get("/fhir/Observation"), 403, "forbidden")
    assert (await api.anonymous().get("/healthz")).status_code == 200
    assert (await api.anonymous().get("/readyz")).json() == {"status": "ready"}


async def test_create_read_and_headers(api: ApiHarness) -> None:
    for content_type in ("application/fhir+json", "application/fhir+json; charset=utf-8", "application/json"):
        response = await api.client.post("/fhir/Patient", content=b'{"resourceType":"Patient","id":"ignored"}',
                                         headers={"Content-Type": content_type})
        assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] != "ignored"
    assert response.headers["location"] == f"http://gateway.test/fhir/Patient/{created['id']}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    read = await api.client.get(f"/fhir/Patient/{created['id']}", headers={"Accept": "application/json"})
    assert read.status_code == 200 and read.headers["content-type"].startswith("application/json")
    assert read.json() == created and "last-modified" in read.headers


async def test_a_json_body_in_another_charset_than_utf8_is_refused_naming_it(api: ApiHarness) -> None:
    # http.html#mime-type: FHIR bodies are UTF-8; a latin-1 or UTF-16 body read as UTF-8 would be
    # stored with wrong letters ("Müller" as "M\ufffdller") or refused with a misleading parse error.
    patient = '{"resourceType":"Patient","name":[{"family":"Müller"}]}'
    for content_type, body in (("application/fhir+json; charset=latin-1", patient.encode("latin-1")),
                               ("application/fhir+json; charset=UTF-16", patient.encode("utf-16"))):
        refused = await api.client.post("/fhir/Patient", content=body, headers={"Content-Type": content_type})
        assert "not supported" in assert_outcome(refused, 415, "not-supported")["issue"][0]["diagnostics"]
    patch = b'[{"op":"add","path":"/active","value":true}]'
    await api.client.put("/fhir/Patient/cs1", json={"resourceType": "Patient", "id": "cs1"})
    refused = await api.client.patch("/fhir/Patient/cs1", content=patch.decode().encode("utf-16"),
                                     headers={"Content-Type": "application/json-patch+json; charset=utf-16"})
    assert_outcome(refused, 415, "not-supported")
    for charset in ("utf-8", "UTF8", '"utf-8"', "us-ascii"):
        ok = await api.client.patch("/fhir/Patient/cs1", content=patch,
                                    headers={"Content-Type": f"application/json-patch+json; charset={charset}"})
        assert ok.status_code == 200, ok.text
    stored = await api.client.post("/fhir/Patient", content=patient.encode(),
                                   headers={"Content-Type": "application/fhir+json; charset=utf-8"})
    assert stored.status_code == 201 and stored.json()["name"][0]["family"] == "Müller"


async def test_errors_are_operation_outcomes(api: ApiHarness) -> None:
    c = api.client
    assert_outcome(await c.get("/fhir/Patient/unknown"), 404, "not-found")
    assert_outcome(await c.get("/fhir/Foo/1"), 404, "not-found")
    assert_outcome(await c.get("/fhir/Patient/a_b!"), 400)
    assert_outcome(await c.get("/nowhere"), 404)
    assert_outcome(await c.post("/fhir/Patient", content=b"x", headers={"Content-Type": "text/plain"}), 415)
    assert_outcome(await c.get("/fhir/Patient", params={"_format": "xml"}), 406)
    assert_outcome(await c.get("/fhir/Patient", headers={"Accept": "application/fhir+xml"}), 406)
    # q=0 refuses a type (RFC 9110 12.4.2): no JSON at all is a 406, and a refused type is not chosen.
    assert_outcome(await c.get("/fhir/Patient", headers={"Accept": "application/json;q=0"}), 406)
    assert_outcome(await c.get("/fhir/Patient", headers={"Accept": "application/fhir+json; q=0.0, */*;q=0"}), 406)
    plain = await c.get("/fhir/Patient", headers={"Accept": "application/fhir+json;q=0, application/json"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    assert_outcome(await c.post("/fhir/Patient", content=b"{broken"), 400, "structure")
    assert_outcome(await c.post("/fhir/Patient", json={"resourceType": "Observation"}), 400)
    assert_outcome(await c.post("/fhir/Patient", json={"resourceType": "Patient", "active": "true"}), 400)
    assert_outcome(await c.post("/fhir/Observation", json={"resourceType": "Observation", "code": {"text": "x"}}),
                   422)
    deep: Any = {"resourceType": "Patient"}
    for _ in range(200):
        deep = {"extension": [deep]}
    assert_outcome(await c.post("/fhir/Patient", json=deep), 400, "too-costly")
    big = b'{"resourceType":"Patient","text":"' + b"x" * (11 * 1024 * 1024) + b'"}'
    assert_outcome(await c.post("/fhir/Patient", content=big), 413, "too-costly")
    assert_outcome(await c.post("/fhir/Patient", content=b'{"resourceType":"Patient","x":"\xff"}'), 400)
    assert_outcome(await c.request("TRACE", "/fhir/Patient"), 405)


async def test_update_if_match_delete_and_history(api: ApiHarness) -> None:
    c = api.client
    assert (await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})).status_code == 201
    updated = await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "active": True},
                          headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    stale = await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "active": False},
                        headers={"If-Match": 'W/"1"'})
    assert "the current version is 2" in assert_outcome(stale, 412, "conflict")["issue"][0]["diagnostics"]
    assert (await c.get("/fhir/Patient/p1")).json()["active"] is True
    absent = await c.put("/fhir/Patient/nobody", json={"resourceType": "Patient", "id": "nobody"},
                         headers={"If-Match": 'W/"1"'})
    assert "Patient/nobody is not there" in assert_outcome(absent, 412, "conflict")["issue"][0]["diagnostics"]
    assert_outcome(await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p2"}), 400)
    assert_outcome(await c.put("/fhir/Patient/p1", json={"resourceType": "Patient"}), 400, "required")
    assert (await c.get("/fhir/Patient/p1/_history/1")).json()["meta"]["versionId"] == "1"
    assert (await c.get("/fhir/Patient/p1", headers={"If-None-Match": 'W/"2"'})).status_code == 304
    assert (await c.delete("/fhir/Patient/p1")).status_code == 200
    assert_outcome(await c.get("/fhir/Patient/p1"), 410, "deleted")
    history = (await c.get("/fhir/Patient/p1/_history")).json()
    assert history["type"] == "history" and history["total"] == 3
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert (await c.get("/fhir/Patient", params={"_id": "p1"})).json()["total"] == 0
    assert (await c.get("/fhir/Patient/_history")).json()["total"] == 3
    # Each of the three writes stored a Provenance naming the client, part of the record's history.
    system = (await c.get("/fhir/_history")).json()
    assert sorted(e["request"]["url"].split("/")[0] for e in system["entry"]) == ["Patient"] * 3 + ["Provenance"] * 3



async def test_writes_honour_if_none_match(api: ApiHarness) -> None:
    # RFC 9110 13.1.2: an origin server MUST evaluate If-None-Match before performing the method;
    # "*" keeps a PUT from overwriting a resource the client believes is not there, and on a
    # method other than GET/HEAD a false condition answers 412.
    c = api.client
    patient = {"resourceType": "Patient", "id": "inm"}
    created = await c.put("/fhir/Patient/inm", json=patient, headers={"If-None-Match": "*"})
    assert created.status_code == 201, created.text
    again = await c.put("/fhir/Patient/inm", json={**patient, "active": True}, headers={"If-None-Match": "*"})
    assert "version 1" in assert_outcome(again, 412, "conflict")["issue"][0]["diagnostics"]
    listed = await c.put("/fhir/Patient/inm", json={**patient, "active": True},
                         headers={"If-None-Match": 'W/"3", W/"1"'})
    assert_outcome(listed, 412, "conflict")
    other = await c.put("/fhir/Patient/inm", json={**patient, "active": True}, headers={"If-None-Match": 'W/"7"'})
    assert other.status_code == 200 and other.headers["etag"] == 'W/"2"'
    patch = await c.patch("/fhir/Patient/inm", content=b'[{"op": "add", "path": "/active", "value": false}]',
                          headers={"Content-Type": "application/json-patch+json", "If-None-Match": 'W/"2"'})
    assert_outcome(patch, 412, "conflict")
    conditional = await c.put("/fhir/Patient", params={"_id": "inm"}, json=patient, headers={"If-None-Match": "*"})
    assert_outcome(conditional, 412, "conflict")
    assert_outcome(await c.delete("/fhir/Patient/inm", headers={"If-None-Match": "*"}), 412, "conflict")
    assert_outcome(await c.delete("/fhir/Patient", params={"_id": "inm"}, headers={"If-None-Match": "*"}), 412)
    assert (await c.get("/fhir/Patient/inm")).json()["meta"]["versionId"] == "2"  # nothing above wrote
    assert (await c.delete("/fhir/Patient/inm")).status_code == 200
    # A deleted resource has no current representation: "*" lets the PUT create it again.
    recreated = await c.put("/fhir/Patient/inm", json=patient, headers={"If-None-Match": "*"})
    assert recreated.status_code == 201, recreated.text



async def test_if_match_star_needs_a_current_version(api: ApiHarness) -> None:
    # RFC 9110 13.1.1: "If-Match: *" is true when the target has a current representation; a PUT
    # behind it updates and never creates, and it is a valid header (it answered 400).
    c = api.client
    patient = {"resourceType": "Patient", "id": "star"}
    absent = await c.put("/fhir/Patient/star", json=patient, headers={"If-Match": "*"})
    assert "not there" in assert_outcome(absent, 412, "conflict")["issue"][0]["diagnostics"]
    assert_outcome(await c.put("/fhir/Patient", params={"_id": "star"}, json=patient, headers={"If-Match": "*"}), 412)
    assert (await c.put("/fhir/Patient/star", json=patient)).status_code == 201
    updated = await c.put("/fhir/Patient/star", json={**patient, "active": True}, headers={"If-Match": "*"})
    assert updated.status_code == 200 and updated.headers["etag"] == 'W/"2"'
    assert (await c.delete("/fhir/Patient/star", headers={"If-Match": "*"})).status_code == 200
    assert_outcome(await c.delete("/fhir/Patient/star", headers={"If-Match": "*"}), 412, "conflict")
    assert_outcome(await c.delete("/fhir/Patient", params={"_id": "star"}, headers={"If-Match": "*"}), 412)

async def test_writes_honour_if_unmodified_since_unless_if_match_is_there(api: ApiHarness) -> None:
    # RFC 9110 13.1.4: without If-Match, an origin server MUST evaluate If-Unmodified-Since before
    # the method: a resource modified after the date answers 412; an invalid date is ignored.
    c = api.client
    first = await c.put("/fhir/Patient/ius", json={"resourceType": "Patient", "id": "ius"})
    assert first.status_code == 201
    modified = first.headers["last-modified"]
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    patch_type = {"Content-Type": "application/json-patch+json"}
    cases: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("PUT", "/fhir/Patient/ius", {"json": {"resourceType": "Patient", "id": "ius", "active": True}}, {}),
        ("PATCH", "/fhir/Patient/ius", {"content": b'[{"op": "add", "path": "/active", "value": true}]'}, patch_type),
        ("DELETE", "/fhir/Patient/ius", {}, {}),
        ("DELETE", "/fhir/Patient?_id=ius", {}, {}),
    ]
    for method, path, kwargs, headers in cases:
        stale = await c.request(method, path, headers={**headers, "If-Unmodified-Since": old}, **kwargs)
        assert "modified since" in assert_outcome(stale, 412, "conflict")["issue"][0]["diagnostics"], method
    assert (await c.get("/fhir/Patient/ius")).json()["meta"]["versionId"] == "1"
    # Not modified since the date it was last modified (to the second): the write goes through.
    kept = await c.put("/fhir/Patient/ius", json={"resourceType": "Patient", "id": "ius", "active": True},
                       headers={"If-Unmodified-Since": modified})
    assert kept.status_code == 200, kept.text
    # If-Match wins (the date is ignored), and a date that is no HTTP date is ignored.
    matched = await c.put("/fhir/Patient/ius", json={"resourceType": "Patient", "id": "ius"},
                          headers={"If-Match": 'W/"2"', "If-Unmodified-Since": old})
    assert matched.status_code == 200, matched.text
    ignored = await c.delete("/fhir/Patient/ius", headers={"If-Unmodified-Since": "yesterday"})
    assert ignored.status_code == 200, ignored.text

async def test_history_entries_name_the_interaction_that_made_each_version(api: ApiHarness) -> None:
    # Bundle.entry.request "for history, shows how the entry was processed to create the version"
    # (bundle-definitions.html#Bundle.entry.request; http.html#history): an update-as-create is a PUT
    # of [type]/[id], a patch a PATCH, a re-creation after a delete a 201 again.
    c = api.client
    patient = {"resourceType": "Patient", "id": "h1", "identifier": [{"system": "urn:h", "value": "1"}]}
    assert (await c.put("/fhir/Patient/h1", json=patient)).status_code == 201
    patched = await c.patch("/fhir/Patient/h1", content=b'[{"op": "add", "path": "/active", "value": true}]',
                            headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    assert (await c.put("/fhir/Patient/h1", json={**patient, "active": False})).status_code == 200
    assert (await c.delete("/fhir/Patient/h1")).status_code == 200
    assert (await c.put("/fhir/Patient/h1", json=patient)).status_code == 201
    entries = (await c.get("/fhir/Patient/h1/_history")).json()["entry"]
    assert [(e["request"]["method"], e["request"]["url"], e["response"]["status"]) for e in entries] == [
        ("PUT", "Patient/h1", "201 Created"),
        ("DELETE", "Patient/h1", "410 Gone"),
        ("PUT", "Patient/h1", "200 OK"),
        ("PATCH", "Patient/h1", "200 OK"),
        ("PUT", "Patient/h1", "201 Created"),
    ]
    posted = (await c.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"]
    made = await c.put("/fhir/Patient", params={"identifier": "urn:h|2"},
                       json={"resourceType": "Patient", "identifier": [{"system": "urn:h", "value": "2"}]})
    assert made.status_code == 201, made.text
    conditional = made.json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "h3"}, "request": {"method": "PUT", "url": "Patient/h3"}}]}
    assert (await c.post("/fhir", json=bundle)).status_code == 200
    for rid, request in ((posted, {"method": "POST", "url": "Patient"}),
                         (conditional, {"method": "PUT", "url": f"Patient/{conditional}"}),
                         ("h3", {"method": "PUT", "url": "Patient/h3"})):
        entry = (await c.get(f"/fhir/Patient/{rid}/_history")).json()["entry"][0]
        assert entry["request"] == request and entry["response"]["status"] == "201 Created"


async def test_history_since_an_old_resources_last_change_and_delete_if_match(api: ApiHarness) -> None:
    c = api.client
    assert (await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})).status_code == 201
    active = {"resourceType": "Patient", "id": "p1", "active": True}
    assert (await c.put("/fhir/Patient/p1", json=active)).status_code == 200
    # History since a time after the last change is empty, not a 404.
    later = (await c.get("/fhir/Patient/p1/_history", params={"_since": "2099-01-01T00:00:00Z"})).json()
    assert later["type"] == "history" and later["total"] == 0
    assert_outcome(await c.get("/fhir/Patient/nobody/_history", params={"_since": "2000-01-01"}), 404)
    # A DELETE with If-Match deletes only that version (RFC 9110's preconditions hold for every method).
    assert_outcome(await c.delete("/fhir/Patient/p1", headers={"If-Match": 'W/"1"'}), 412, "conflict")
    assert (await c.get("/fhir/Patient/p1")).status_code == 200
    assert_outcome(await c.delete("/fhir/Patient/gone", headers={"If-Match": 'W/"1"'}), 412, "conflict")
    assert (await c.delete("/fhir/Patient/p1", headers={"If-Match": 'W/"2"'})).status_code == 200
    assert (await c.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})).status_code == 201
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/p1", "ifMatch": 'W/"1"'}}]}
    assert (await c.post("/fhir", json=bundle)).json()["entry"][0]["response"]["status"].startswith("412")
    assert (await c.get("/fhir/Patient/p1")).status_code == 200  # the batch's stale DELETE changed nothing


async def test_history_pages_hold_still_while_resources_change(api: ApiHarness) -> None:
    """Followed verbatim, history's next links neither repeat nor skip a version when writes come
    between pages (newest first: a new version would push every later page one place down)."""
    c = api.client
    # One transaction: eight versions of one millisecond, which type and id keep in one order.
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"h{n}"}, "request": {"method": "PUT", "url": f"Patient/h{n}"}}
        for n in range(8)]}
    assert (await c.post("/fhir", json=bundle)).status_code == 200
    for n in range(4):
        assert (await c.put(f"/fhir/Patient/h{n}", json={"resourceType": "Patient", "id": f"h{n}", "active": True}))
    before = [(e["resource"]["id"], e["resource"]["meta"]["versionId"])
              for e in (await c.get("/fhir/Patient/_history", params={"_count": 100})).json()["entry"]]
    assert len(before) == 12
    seen: list[tuple[str, str]] = []
    page = (await c.get("/fhir/Patient/_history", params={"_count": 5})).json()
    while True:
        seen += [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in page["entry"]]
        # A write between pages: on the pages that follow, neither the new version nor a shift.
        await c.put(f"/fhir/Patient/h{len(seen)}", json={"resourceType": "Patient", "id": f"h{len(seen)}",
                                                         "gender": "female"})
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        assert "_snapshot=" in following[0]
        page = (await c.get(following[0].removeprefix("http://gateway.test"))).json()
        assert page["total"] == 12
    assert seen == before
    assert_outcome(await c.get("/fhir/Patient/_history", params={"_snapshot": "soon"}), 400, "invalid")


async def test_history_takes_summary_elements_and_strict_handling(api: ApiHarness) -> None:
    """history.html: the search result parameters _summary and _elements apply to history too, and a
    parameter history does not know is refused under ``Prefer: handling=strict``."""
    c = api.client
    patient = {"resourceType": "Patient", "id": "hs1", "active": True, "gender": "female",
               "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'}}
    assert (await c.put("/fhir/Patient/hs1", json=patient)).status_code == 201
    assert (await c.put("/fhir/Patient/hs1", json={**patient, "gender": "male"})).status_code == 200
    for path in ("/fhir/Patient/hs1/_history", "/fhir/Patient/_history", "/fhir/_history"):
        entries = [e for e in (await c.get(path, params={"_elements": "gender"})).json()["entry"]
                   if e["resource"]["id"] == "hs1"]
        assert [e["resource"].get("gender") for e in entries] == ["male", "female"]
        assert all("active" not in e["resource"] and "text" not in e["resource"] for e in entries)
        assert all({"code": "SUBSETTED"}.items() <= e["resource"]["meta"]["tag"][0].items() for e in entries)
        text = [e for e in (await c.get(path, params={"_summary": "text"})).json()["entry"]
                if e["resource"]["id"] == "hs1"]
        assert len(text) == 2 and all("text" in e["resource"] and "gender" not in e["resource"] for e in text)
        counted = (await c.get(path, params={"_summary": "count"})).json()
        everything = (await c.get(path)).json()["total"]
        assert counted["total"] == everything >= 2 and "entry" not in counted
        assert not any(link["relation"] == "next" for link in counted.get("link", []))
        assert_outcome(await c.get(path, params={"_summary": "maybe"}), 400, "invalid")
        strict = await c.get(path, params={"gender": "male"}, headers={"Prefer": "handling=strict"})
        assert "gender" in assert_outcome(strict, 400, "not-supported")["issue"][0]["diagnostics"]
        assert (await c.get(path, params={"gender": "male"})).json()["total"] == everything  # lenient: ignored
    whole = (await c.get("/fhir/Patient/hs1/_history", params={"_summary": "false"})).json()["entry"]
    assert whole[0]["resource"]["active"] is True and "tag" not in whole[0]["resource"]["meta"]


async def test_empty_parameters_are_not_there(api: ApiHarness) -> None:
    """search.html: an empty value is ignored, on a read, a search and a history alike."""
    c = api.client
    assert (await c.put("/fhir/Patient/e1", json={"resourceType": "Patient", "id": "e1", "active": True})).is_success
    read = await c.get("/fhir/Patient/e1", params={"_summary": "", "_elements": ""})
    assert read.status_code == 200 and read.json()["active"] is True and "meta" in read.json()
    search = await c.get("/fhir/Patient", params={"_count": "", "_sort": "", "_id": "e1"})
    assert search.status_code == 200 and search.json()["total"] == 1
    history = await c.get("/fhir/Patient/e1/_history", params={"_count": "", "_offset": ""})
    assert history.status_code == 200 and history.json()["total"] == 1


async def test_prefer_return(api: ApiHarness) -> None:
    minimal = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"},
                                    headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and "location" in minimal.headers
    outcome = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"},
                                    headers={"Prefer": "return=OperationOutcome"})
    assert outcome.json()["resourceType"] == "OperationOutcome"
    typo = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"},
                                 headers={"Prefer": "return=presentation"})
    assert typo.status_code == 201


async def test_conditional_create_and_update(api: ApiHarness) -> None:
    c = api.client
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "1"}]}
    first = await c.post("/fhir/Patient", json=body, headers={"If-None-Exist": "identifier=urn:s|1"})
    second = await c.post("/fhir/Patient", json=body, headers={"If-None-Exist": "identifier=urn:s|1"})
    third = await c.post("/fhir/Patient?identifier=urn:s|1", json=body)  # fhirpy get_or_create
    assert (first.status_code, second.status_code, third.status_code) == (201, 200, 200)
    assert first.json()["id"] == second.json()["id"] == third.json()["id"]
    await c.post("/fhir/Patient", json=body)
    assert_outcome(await c.post("/fhir/Patient", json=body, headers={"If-None-Exist": "identifier=urn:s|1"}), 412)
    # Result parameters alone are no condition: they would match every Patient.
    for condition in ("_count=1", "_sort=_id&_total=none"):
        assert_outcome(await c.post("/fhir/Patient", json=body, headers={"If-None-Exist": condition}), 400)
    assert_outcome(await c.delete("/fhir/Patient", params={"_count": "1"}), 400)
    upsert = {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "2"}]}
    created = await c.put("/fhir/Patient", params={"identifier": "urn:s|2"}, json=upsert)
    again = await c.put("/fhir/Patient", params={"identifier": "urn:s|2"}, json=upsert)
    assert (created.status_code, again.status_code) == (201, 200)
    assert created.json()["id"] == again.json()["id"]
    assert_outcome(await c.put("/fhir/Patient", params={"identifier": "urn:s|1"}, json=body), 412)


async def test_conditional_update_honours_if_match(api: ApiHarness) -> None:
    c = api.client
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "3"}]}
    created = await c.put("/fhir/Patient", params={"identifier": "urn:s|3"}, json=body)
    assert created.status_code == 201
    assert (await c.put("/fhir/Patient", params={"identifier": "urn:s|3"}, json={**body, "active": True},
                        headers={"If-Match": 'W/"1"'})).status_code == 200
    # A stale If-Match changes nothing (a lost update otherwise), as on PUT [type]/[id].
    stale = await c.put("/fhir/Patient", params={"identifier": "urn:s|3"}, json={**body, "active": False},
                        headers={"If-Match": 'W/"1"'})
    assert_outcome(stale, 412, "conflict")
    assert (await c.get(f"/fhir/Patient/{created.json()['id']}")).json()["active"] is True
    # An If-Match on a condition matching nothing names no current version: 412, nothing created.
    assert_outcome(await c.put("/fhir/Patient", params={"identifier": "urn:s|4"}, json=body,
                               headers={"If-Match": 'W/"1"'}), 412, "conflict")
    assert (await c.get("/fhir/Patient", params={"identifier": "urn:s|4"})).json()["total"] == 0
    # A conditional delete takes If-Match too (over REST and in a Bundle): only that version goes.
    stale_delete = await c.delete("/fhir/Patient", params={"identifier": "urn:s|3"}, headers={"If-Match": 'W/"1"'})
    assert "current version is 2" in assert_outcome(stale_delete, 412, "conflict")["issue"][0]["diagnostics"]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:s|3", "ifMatch": 'W/"1"'}}]}
    assert (await c.post("/fhir", json=bundle)).json()["entry"][0]["response"]["status"].startswith("412")
    assert (await c.get(f"/fhir/Patient/{created.json()['id']}")).status_code == 200
    deleted = await c.delete("/fhir/Patient", params={"identifier": "urn:s|3"}, headers={"If-Match": 'W/"2"'})
    assert deleted.status_code == 200
    assert (await c.get(f"/fhir/Patient/{created.json()['id']}")).status_code == 410


async def test_search_bundle_paging_and_summaries(api: ApiHarness) -> None:
    c = api.client
    for i in range(23):
        await c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": f"Pager{i}"}],
                                            "gender": "other"})
    page = (await c.get("/fhir/Patient", params={"family": "pager", "_count": "5"})).json()
    assert page["type"] == "searchset" and page["total"] == 23
    ids: list[str] = []
    while True:
        for entry in page["entry"]:
            assert entry["fullUrl"].startswith("http://gateway.test/fhir/Patient/")
            assert entry["search"]["mode"] == "match"
            ids.append(entry["resource"]["id"])
        links = {link["relation"]: link["url"] for link in page["link"]}
        assert links["self"].startswith("http://gateway.test/fhir/Patient?")
        if "next" not in links:
            break
        await c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "PagerLate"}]})
        page = (await c.get(links["next"])).json()
        assert page["total"] == 23
    assert len(ids) == len(set(ids)) == 23
    count = (await c.get("/fhir/Patient", params={"_summary": "count"})).json()
    assert count["total"] >= 23 and "entry" not in count
    zero = (await c.get("/fhir/Patient", params={"_count": "0", "_totalMethod": "count"})).json()
    assert zero["total"] == count["total"]
    assert [e["search"]["mode"] for e in zero["entry"]] == ["outcome"]  # the _totalMethod warning
    elements = (await c.get("/fhir/Patient", params={"family": "pager0", "_elements": "gender"})).json()
    resource = elements["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"
    lenient = (await c.get("/fhir/Patient", params={"bogus": "1", "_count": "1"})).json()
    assert "bogus" not in lenient["link"][0]["url"]
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    strict = await c.get("/fhir/Patient", params={"bogus": "1"}, headers={"Prefer": "handling=strict"})
    assert_outcome(strict, 400)
    assert_outcome(await c.get("/fhir/Patient", params={"birthdate": "notadate"}), 400)
    posted = await c.post("/fhir/Patient/_search", content=b"family=pager1&_count=50",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    got = (await c.get("/fhir/Patient", params={"family": "pager1", "_count": "50"})).json()
    assert {e["resource"]["id"] for e in posted.json()["entry"]} == {e["resource"]["id"] for e in got["entry"]}


TRANSACTION = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
         "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:tx", "value": "1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:tx|1"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                      "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
         "request": {"method": "POST", "url": "Observation"}},
    ],
}


@pytest.mark.parametrize("path", ["/fhir", "/fhir/"])
async def test_transaction_resolves_urn_uuid(api: ApiHarness, path: str) -> None:
    response = await api.client.post(path, json=TRANSACTION)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "transaction-response" and len(bundle["entry"]) == 2
    patient_ref = bundle["entry"][0]["response"]["location"].split("/_history")[0]
    obs_location = bundle["entry"][1]["response"]["location"]
    assert bundle["entry"][1]["response"]["status"] == "201 Created"
    obs = (await api.client.get("/fhir/" + obs_location.split("/_history")[0])).json()
    assert obs["subject"]["reference"] == patient_ref



async def test_transaction_replaces_full_urls_in_uri_elements_and_narrative_links(api: ApiHarness) -> None:
    # http.html#trules: "Servers SHALL replace all matching links in the bundle, whether they are found
    # in the resource ids, resource references, elements of type uri, url, oid, uuid, and <a href="" &
    # <img src="" in the narrative. Elements of type canonical are not replaced."
    patient, binary = "urn:uuid:0f6a1c84-7b7e-4a55-9d0c-2b8a4f3f1e01", "urn:uuid:0f6a1c84-7b7e-4a55-9d0c-2b8a4f3f1e02"
    div = (f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{patient}">the patient</a>'
           f"<img src='{binary}'/><a href=\"urn:uuid:0f6a1c84-7b7e-4a55-9d0c-2b8a4f3f1eff\">other</a></div>")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": binary, "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="},
         "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": patient, "resource": {"resourceType": "Patient", "meta": {"profile": [patient]},
                                          "identifier": [{"system": "urn:ietf:rfc:3986", "value": patient}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": patient},
                      "text": {"status": "generated", "div": div},
                      "extension": [{"url": "http://example.org/seen-by", "valueUri": patient}],
                      "content": [{"attachment": {"contentType": "text/plain", "url": binary}}]},
         "request": {"method": "POST", "url": "DocumentReference"}},
        # An absolute fullUrl that is also a canonical URL: a Coding.system (uri) naming it stays as it is.
        {"fullUrl": "http://example.org/CodeSystem/kinds",
         "resource": {"resourceType": "CodeSystem", "url": "http://example.org/CodeSystem/kinds", "status": "active",
                      "content": "complete"},
         "request": {"method": "POST", "url": "CodeSystem"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"coding": [{"system": "http://example.org/CodeSystem/kinds", "code": "k"}]}},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    response = await api.client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    binary_ref, patient_ref, doc_ref, _, obs_ref = (e["response"]["location"].split("/_history")[0]
                                                    for e in response.json()["entry"])
    observation = (await api.client.get(f"/fhir/{obs_ref}")).json()
    assert observation["code"]["coding"][0]["system"] == "http://example.org/CodeSystem/kinds"
    doc = (await api.client.get(f"/fhir/{doc_ref}")).json()
    assert doc["subject"]["reference"] == patient_ref
    assert doc["content"][0]["attachment"]["url"] == binary_ref
    assert doc["extension"][0]["valueUri"] == patient_ref
    assert f'<a href="{patient_ref}">' in doc["text"]["div"] and f"<img src='{binary_ref}'/>" in doc["text"]["div"]
    assert "urn:uuid:0f6a1c84-7b7e-4a55-9d0c-2b8a4f3f1eff" in doc["text"]["div"]  # no entry has it: left alone
    stored = (await api.client.get(f"/fhir/{patient_ref}")).json()
    # canonical (meta.profile) and string (Identifier.value) elements keep the fullUrl
    assert stored["meta"]["profile"] == [patient] and stored["identifier"][0]["value"] == patient


async def test_transaction_conditions_see_the_deletes_processed_before_them(api: ApiHarness) -> None:
    # http.html#trules: DELETEs are processed first, then POSTs, then PUTs/PATCHes: an ifNoneExist or a
    # conditional update finds nothing the same transaction deletes (it answered 500, or updated the
    # deleted resource, when the conditions were judged before the deletes).
    c = api.client
    identifier = [{"system": "urn:del-first", "value": "1"}]
    assert (await c.put("/fhir/Patient/df1", json={"resourceType": "Patient", "id": "df1",
                                                   "identifier": identifier})).status_code == 201
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": identifier},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:del-first|1"}},
        {"request": {"method": "DELETE", "url": "Patient/df1"}},
    ]}
    response = await c.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    created, deleted = response.json()["entry"]
    assert created["response"]["status"] == "201 Created" and deleted["response"]["status"].startswith("204")
    new_id = created["resource"]["id"]
    assert new_id != "df1"
    assert_outcome(await c.get("/fhir/Patient/df1"), 410, "deleted")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:del-first|1"}},
        {"resource": {"resourceType": "Patient", "identifier": identifier, "active": True},
         "request": {"method": "PUT", "url": "Patient?identifier=urn:del-first|1"}},
    ]}
    response = await c.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    replaced = response.json()["entry"][1]
    assert replaced["response"]["status"] == "201 Created" and replaced["resource"]["id"] != new_id
    assert_outcome(await c.get(f"/fhir/Patient/{new_id}"), 410, "deleted")
    found = (await c.get("/fhir/Patient", params={"identifier": "urn:del-first|1"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [replaced["resource"]["id"]]

async def test_transaction_is_atomic_and_batch_is_not(api: ApiHarness) -> None:
    bad_entry = {"resource": {"resourceType": "Observation", "code": {"text": "no status"}},
                 "request": {"method": "POST", "url": "Observation"}}
    good = {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:atomic", "value": "1"}]},
            "request": {"method": "POST", "url": "Patient"}}
    failed = await api.client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                  "entry": [good, good, bad_entry]})
    body = assert_outcome(failed, 422)
    assert body["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert (await api.client.get("/fhir/Patient", params={"identifier": "urn:atomic|1"})).json()["total"] == 0
    batch = await api.client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [good, bad_entry]})
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert statuses[0] == "201 Created" and statuses[1] == "422"
    assert batch.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert_outcome(await api.client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}), 400)
    assert_outcome(await api.client.post("/fhir", content=b""), 400)


async def test_conditional_references_in_transactions(api: ApiHarness) -> None:
    await api.client.post("/fhir/Patient", json={"resourceType": "Patient",
                                                 "identifier": [{"system": "urn:cr", "value": "9"}]})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "Patient?identifier=urn:cr|9"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    response = await api.client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["resource"]["subject"]["reference"].startswith("Patient/")


async def test_patch_and_everything(api: ApiHarness) -> None:
    c = api.client
    pid = (await c.post("/fhir/Patient", json={"resourceType": "Patient", "active": False})).json()["id"]
    await c.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final",
                                            "code": {"text": "x"}, "subject": {"reference": f"Patient/{pid}"}})
    patched = await c.patch(f"/fhir/Patient/{pid}", content=b'[{"op":"replace","path":"/active","value":true}]',
                            headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and patched.json()["active"] is True
    failing = await c.patch(f"/fhir/Patient/{pid}", content=b'[{"op":"test","path":"/active","value":false}]',
                            headers={"Content-Type": "application/json-patch+json"})
    assert_outcome(failing, 422)
    merge = await c.patch(f"/fhir/Patient/{pid}", json={"active": False})
    assert_outcome(merge, 400)  # JSON, but neither a JSON Patch nor a FHIRPath Patch (a Parameters)
    merge = await c.patch(f"/fhir/Patient/{pid}", json={"active": False},
                          headers={"Content-Type": "application/merge-patch+json"})
    assert_outcome(merge, 415)
    everything = (await c.get(f"/fhir/Patient/{pid}/$everything")).json()
    # The Provenances of the patient's create and patch target the patient: part of their record.
    assert sorted(e["resource"]["resourceType"] for e in everything["entry"]) == [
        "Observation", "Patient", "Provenance", "Provenance"
    ]


async def _patient_with_observations(c: httpx.AsyncClient, pid: str, prefix: str, count: int) -> str:
    """A Patient and ``count`` Observations about them; the URL of their ``$everything``."""
    await c.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid})
    for n in range(count):
        await c.put(f"/fhir/Observation/{prefix}{n}", json={
            "resourceType": "Observation", "id": f"{prefix}{n}", "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{pid}"}})
    return f"/fhir/Patient/{pid}/$everything"


async def test_everything_takes_count_type_and_since(api: ApiHarness) -> None:
    c = api.client
    url = await _patient_with_observations(c, "p9", "o", 4)
    everything = (await c.get(url)).json()
    total = everything["total"]
    assert total == len(everything["entry"]) == 6  # the Patient, 4 Observations, the Provenance of its write
    seen: list[str] = []
    page = (await c.get(url, params={"_count": 3})).json()
    while True:
        assert len(page["entry"]) <= 3 and page["total"] == total
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"]]
        after = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not after:
            break
        page = (await c.get(after[0].removeprefix("http://gateway.test"))).json()
    assert len(seen) == len(set(seen)) == total and seen[0] == "Patient/p9"
    assert (await c.get(url, params={"_count": 0})).json().get("entry") is None
    only = (await c.get(url, params={"_type": "Observation"})).json()
    assert only["total"] == 4 and {e["resource"]["resourceType"] for e in only["entry"]} == {"Observation"}
    both = (await c.get(url, params={"_type": "Patient,Observation", "_count": 2})).json()
    assert both["total"] == 5 and any("_type=Patient%2CObservation" in link["url"] for link in both["link"])
    assert (await c.get(url, params={"_since": "2099-01-01"})).json()["total"] == 0
    await c.put("/fhir/Observation/o0", json={"resourceType": "Observation", "id": "o0", "status": "amended",
                                              "code": {"text": "x"}, "subject": {"reference": "Patient/p9"}})
    latest = (await c.get("/fhir/Observation/o0")).json()["meta"]["lastUpdated"]
    since = (await c.get(url, params={"_since": latest, "_type": "Observation"})).json()
    assert [e["resource"]["id"] for e in since["entry"]] == ["o0"]
    for bad in ({"_type": "Foo"}, {"_since": "yesterday"}, {"start": "2020-01-01"}, {"colour": "red"}):
        assert_outcome(await c.get(url, params=bad), 400)


async def test_include_wildcard_follows_every_reference_parameter(api_on: ApiHarness) -> None:
    api = api_on
    c = api.client
    await c.put("/fhir/Patient/w1", json={"resourceType": "Patient", "id": "w1"})
    await c.put("/fhir/Practitioner/chw1", json={"resourceType": "Practitioner", "id": "chw1"})
    await c.put("/fhir/Encounter/we1", json={"resourceType": "Encounter", "id": "we1", "status": "finished",
                                             "class": {"code": "HH"}, "subject": {"reference": "Patient/w1"}})
    await c.put("/fhir/Observation/wo1", json={
        "resourceType": "Observation", "id": "wo1", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/w1"}, "encounter": {"reference": "Encounter/we1"},
        "performer": [{"reference": "Practitioner/chw1"}]})
    page = (await c.get("/fhir/Observation", params={"_id": "wo1", "_include": "Observation:*"})).json()
    included = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"]
                if e["search"]["mode"] == "include"}
    assert included == {"Patient/w1", "Encounter/we1", "Practitioner/chw1"}
    back = (await c.get("/fhir/Patient", params={"_id": "w1", "_revinclude": "Observation:*"})).json()
    assert {e["resource"]["id"] for e in back["entry"] if e["search"]["mode"] == "include"} == {"wo1"}
    # Only the types the client may read.
    narrow = api.with_scopes("system/Observation.rs", "system/Patient.rs")
    page = (await narrow.get("/fhir/Observation", params={"_id": "wo1", "_include": "Observation:*"})).json()
    assert {e["resource"]["resourceType"] for e in page["entry"]} == {"Observation", "Patient"}
    answer = await c.get("/fhir/Observation", params={"_include": "*"})
    assert_outcome(answer, 400)
    assert "wildcard source type is not supported" in answer.text


async def test_everything_by_post_takes_its_parameters_in_the_body(api: ApiHarness) -> None:
    # operations.html: POST is the general way to invoke an operation (clients send it by default).
    c = api.client
    url = await _patient_with_observations(c, "p8", "e", 3)
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Observation"},
                                                              {"name": "_count", "valueInteger": 2}]}
    by_post = await c.post(url, json=parameters, headers={"Content-Type": "application/fhir+json"})
    by_get = await c.get(url, params={"_type": "Observation", "_count": 2})
    assert by_post.status_code == 200, by_post.text
    assert [e["fullUrl"] for e in by_post.json()["entry"]] == [e["fullUrl"] for e in by_get.json()["entry"]]
    assert by_post.json()["total"] == 3 and len(by_post.json()["entry"]) == 2
    assert (await c.post(url)).json()["total"] == (await c.get(url)).json()["total"]  # no body: every type
    form = await c.post(url, content=b"_type=Patient", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.json()["total"] == 1
    bad = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueCoding": {"code": "x"}}]}
    answer = await c.post(url, json=bad)
    assert_outcome(answer, 400)
    assert "Parameters.parameter[0]" in answer.text
    assert_outcome(await c.post(url, json={"resourceType": "Patient"}), 400)
    for odd in (5, "x", {"name": "_count"}, [5], [{"name": 5, "valueInteger": 1}]):
        assert_outcome(await c.post(url, json={"resourceType": "Parameters", "parameter": odd}), 400)
    assert (await api.with_scopes("system/Observation.rs").post(url, json=parameters)).status_code == 403


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_api_docs_are_off_by_default(api: ApiHarness, path: str) -> None:
    assert (await api.anonymous().get(path)).status_code == 404
    assert (await api.client.get(path)).status_code == 404


async def test_api_docs_when_on_need_a_token_and_declare_bearer(tmp_path: Path) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/docs.db", api_docs=True)
    store = open_store(settings.store_url)
    app = create_app(settings, store=store)
    try:
        async with app.router.lifespan_context(app):
            harness = ApiHarness(app, store)
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert_outcome(await harness.anonymous().get(path), 401, "login")
                assert (await harness.with_scopes("system/Patient.r").get(path)).status_code == 200
            document = (await harness.client.get("/openapi.json")).json()
            assert document["components"]["securitySchemes"]["bearer"] == {
                "type": "http", "scheme": "bearer", "description": "an API client's token"}
            assert document["security"] == [{"bearer": []}]
            # The FHIR API is served by plain routes and still documented by its FastAPI routes.
            assert {"/fhir/{rtype}", "/fhir/{rtype}/{rid}", "/fhir/{rtype}/{rid}/_history/{vid}",
                    "/fhir/Patient/$match", "/fhir/"} <= set(document["paths"])
            assert set(document["paths"]["/fhir/{rtype}/{rid}"]) == {"get", "put", "patch", "delete"}
            await harness.aclose()
    finally:
        store.close()


async def test_host_headers_neither_grow_the_capability_cache_nor_reach_links(api: ApiHarness) -> None:
    ctx = api.app.state.ctx  # type: ignore[attr-defined]
    anonymous = api.anonymous()
    for i in range(40):  # foreign hosts, and an allowed host on ever new ports
        for host in (f"h{i}.evil.example", f"gateway.test:{10000 + i}"):
            response = await anonymous.get("/fhir/metadata", headers={"Host": host})
            assert response.status_code == 200
    assert len(ctx._capability_bytes) <= CAPABILITY_CACHE_SIZE
    assert len(ctx.base_urls) <= BASE_URL_CACHE_SIZE
    for i in range(3):  # the cached base follows the Host of each request
        host = f"gateway.test:{10000 + i}"
        created = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Host": host})
        assert created.headers["location"].startswith(f"http://{host}/fhir/Patient/")

    foreign = {"Host": "evil.example"}
    statement = (await anonymous.get("/fhir/metadata", headers=foreign)).json()
    assert statement["url"] == "http://127.0.0.1:8080/fhir/metadata"
    created = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=foreign)
    assert created.status_code == 201
    assert created.headers["location"].startswith("http://127.0.0.1:8080/fhir/Patient/")
    await api.client.post("/fhir/Patient", json={"resourceType": "Patient"})
    search = await api.client.get("/fhir/Patient", params={"_count": "1"}, headers=foreign)
    assert search.status_code == 200 and "evil" not in search.text
    assert {link["relation"] for link in search.json()["link"]} >= {"self", "next"}
    allowed = await api.client.get("/fhir/Patient", params={"_count": "1"})
    assert all(link["url"].startswith("http://gateway.test/fhir/") for link in allowed.json()["link"])


async def test_a_bundle_with_a_repeated_full_url_is_refused(api: ApiHarness) -> None:
    urn = "urn:uuid:6f1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3dab"
    entries = [
        {"fullUrl": urn, "resource": {"resourceType": "Patient", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": urn, "resource": {"resourceType": "Patient", "gender": "male"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": urn}}, "request": {"method": "POST", "url": "Observation"}},
    ]  # fmt: skip
    for kind in ("transaction", "batch"):
        response = await api.client.post("/fhir", json={"resourceType": "Bundle", "type": kind, "entry": entries})
        issue = assert_outcome(response, 400)["issue"][0]
        assert issue["expression"] == ["Bundle.entry[1].fullUrl"] and "bdl-7" in issue["diagnostics"]
    assert (await api.client.get("/fhir/Patient")).json()["total"] == 0


async def test_conditional_read_by_etag_list_star_and_modified_since(api: ApiHarness) -> None:
    c = api.client
    assert (await c.put("/fhir/Patient/cr1", json={"resourceType": "Patient", "id": "cr1"})).status_code == 201
    current = await c.put("/fhir/Patient/cr1", json={"resourceType": "Patient", "id": "cr1", "active": True})
    modified = current.headers["last-modified"]
    for headers, status in [
        ({"If-None-Match": 'W/"2"'}, 304), ({"If-None-Match": 'W/"1", W/"2"'}, 304), ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": 'W/"1"'}, 200), ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200), ({"If-Modified-Since": "yesterday"}, 200),
        ({"If-None-Match": 'W/"1"', "If-Modified-Since": modified}, 200),  # the ETag list decides
    ]:
        response = await c.get("/fhir/Patient/cr1", headers=headers)
        assert response.status_code == status, (headers, response.status_code)
        assert response.headers["etag"] == 'W/"2"'
        assert (response.content == b"") == (status == 304)
    assert (await c.get("/fhir/Patient/cr1/_history/1", headers={"If-None-Match": 'W/"1"'})).status_code == 304
    assert (await c.get("/fhir/Patient/cr1/_history/1", headers={"If-None-Match": 'W/"2"'})).status_code == 200
    metadata = (await c.get("/fhir/metadata")).json()
    patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
    assert patient["conditionalRead"] == "full-support"


async def test_batch_reads_take_if_none_match_and_if_modified_since(api: ApiHarness) -> None:
    c = api.client
    current = await c.put("/fhir/Patient/cr2", json={"resourceType": "Patient", "id": "cr2"})
    modified = current.headers["last-modified"]
    conditions = [{"ifNoneMatch": 'W/"1"'}, {"ifNoneMatch": 'W/"7"'}, {"ifModifiedSince": modified},
                  {"ifModifiedSince": "Sat, 01 Jan 2000 00:00:00 GMT"}, {}]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/cr2", **condition}} for condition in conditions]}
    entries = (await c.post("/fhir", json=bundle)).json()["entry"]
    # bundle.html: request.ifNoneMatch / ifModifiedSince make a read conditional, as the headers do.
    assert [e["response"]["status"] for e in entries] == ["304 Not Modified", "200 OK", "304 Not Modified",
                                                          "200 OK", "200 OK"]
    assert ["resource" in e for e in entries] == [False, True, False, True, True]
    assert entries[0]["response"]["etag"] == 'W/"1"'
    bundle["entry"] = [{"request": {"method": "GET", "url": "Patient/cr2", "ifNoneMatch": 1}}]
    assert (await c.post("/fhir", json=bundle)).json()["entry"][0]["response"]["status"] == "400"
    # A HEAD entry answers as HEAD does: the status and etag, no resource.
    bundle["entry"] = [{"request": {"method": "HEAD", "url": "Patient/cr2"}}]
    head = (await c.post("/fhir", json=bundle)).json()["entry"][0]
    assert head["response"]["status"] == "200 OK" and head["response"]["etag"] == 'W/"1"' and "resource" not in head


async def test_read_and_vread_take_summary_and_elements(api: ApiHarness) -> None:
    c = api.client
    patient = {"resourceType": "Patient", "id": "sum1", "active": True, "gender": "female",
               "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ana</div>'},
               "name": [{"family": "Ana"}], "photo": [{"contentType": "image/png", "data": "AAAA"}]}
    assert (await c.put("/fhir/Patient/sum1", json=patient)).status_code == 201
    for path in ("/fhir/Patient/sum1", "/fhir/Patient/sum1/_history/1"):
        elements = (await c.get(path, params={"_elements": "gender"})).json()
        assert "gender" in elements and "name" not in elements and "photo" not in elements
        assert elements["meta"]["tag"][0]["code"] == "SUBSETTED"
        summary = (await c.get(path, params={"_summary": "true"})).json()
        assert "name" in summary and "photo" not in summary  # photo is not a summary element
        assert "text" not in (await c.get(path, params={"_summary": "data"})).json()
        whole = (await c.get(path, params={"_summary": "false"})).json()
        assert "photo" in whole and "tag" not in whole["meta"]
        assert_outcome(await c.get(path, params={"_summary": "count"}), 400)
        assert_outcome(await c.get(path, params={"_summary": "bogus"}), 400)


async def test_summary_text_and_elements_keep_mandatory_primitives_and_choices(api: ApiHarness) -> None:
    # search.html#summary: _summary=text keeps "top-level mandatory elements", and _elements keeps
    # them too, or the subsetted resource is not valid FHIR (Observation.status is 1..1).
    c = api.client
    observation = {"resourceType": "Observation", "id": "mand1", "status": "final", "code": {"text": "w"},
                   "note": [{"text": "n"}], "valueQuantity": {"value": 1}}
    assert (await c.put("/fhir/Observation/mand1", json=observation)).status_code == 201
    request = {"resourceType": "MedicationRequest", "id": "mand2", "status": "active", "intent": "order",
               "medicationCodeableConcept": {"text": "m"}, "subject": {"reference": "Patient/x"},
               "note": [{"text": "n"}]}
    assert (await c.put("/fhir/MedicationRequest/mand2", json=request)).status_code == 201
    for params in ({"_summary": "text"}, {"_elements": "note"}):
        obs = (await c.get("/fhir/Observation/mand1", params=params)).json()
        assert obs["status"] == "final" and obs["code"] == {"text": "w"} and "valueQuantity" not in obs
        med = (await c.get("/fhir/MedicationRequest", params={"_id": "mand2", **params})).json()["entry"][0]
        kept = med["resource"]
        assert (kept["status"], kept["intent"], kept["medicationCodeableConcept"]) == ("active", "order", {"text": "m"})



async def test_elements_naming_a_choice_element_keeps_its_typed_property(api: ApiHarness) -> None:
    # search.html#elements: _elements lists element names as the resource defines them; Observation's
    # is value[x] ("value"), which JSON writes valueQuantity, valueString… (json.html#choice).
    c = api.client
    observation = {"resourceType": "Observation", "id": "ch1", "status": "final", "code": {"text": "w"},
                   "valueQuantity": {"value": 1}, "effectiveDateTime": "2024-01-01", "note": [{"text": "n"}]}
    assert (await c.put("/fhir/Observation/ch1", json=observation)).status_code == 201
    for names in ("value", "value[x]", "valueQuantity", "Observation.value"):
        read = (await c.get("/fhir/Observation/ch1", params={"_elements": names})).json()
        assert read["valueQuantity"] == {"value": 1} and "effectiveDateTime" not in read and "note" not in read, names
    found = (await c.get("/fhir/Observation", params={"_id": "ch1", "_elements": "effective,value"})).json()
    kept = found["entry"][0]["resource"]
    assert kept["effectiveDateTime"] == "2024-01-01" and kept["valueQuantity"] == {"value": 1} and "note" not in kept
    # A name that only starts like a choice is not one: "val" keeps nothing of value[x].
    assert "valueQuantity" not in (await c.get("/fhir/Observation/ch1", params={"_elements": "val"})).json()

@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_bundle_get_entries_answer_as_the_rest_read_and_search_do(api: ApiHarness, kind: str) -> None:
    # bundle.html: a GET entry is processed as the same request sent alone; its _summary/_elements,
    # _include, warnings and paging links were dropped.
    c = api.client
    org = {"resourceType": "Organization", "id": f"bg-org-{kind}", "name": "Clinic"}
    assert (await c.put(f"/fhir/Organization/{org['id']}", json=org)).status_code == 201
    for n in range(2):
        patient = {"resourceType": "Patient", "id": f"bg-{kind}-{n}", "gender": "female",
                   "name": [{"family": f"bundleget{kind}"}],
                   "managingOrganization": {"reference": f"Organization/{org['id']}"}}
        assert (await c.put(f"/fhir/Patient/{patient['id']}", json=patient)).status_code == 201
    urls = [f"Patient/bg-{kind}-0?_elements=gender",
            f"Patient?family=bundleget{kind}&_include=Patient:organization&_summary=true&_count=1",
            f"Patient?family=bundleget{kind}&_elements=gender&bogus=1"]
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    answer = await c.post("/fhir", json=bundle)
    assert answer.status_code == 200
    read, included, warned = (e["resource"] for e in answer.json()["entry"])
    assert "name" not in read and read["gender"] == "female" and read["meta"]["tag"][0]["code"] == "SUBSETTED"
    modes = [(e["search"]["mode"], e["resource"]["resourceType"]) for e in included["entry"]]
    assert modes == [("match", "Patient"), ("include", "Organization")] and included["total"] == 2
    assert included["entry"][0]["resource"]["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert [link["relation"] for link in included["link"]] == ["self", "next"]
    assert all("name" not in e["resource"] for e in warned["entry"] if e["search"]["mode"] == "match")
    assert [e["resource"]["issue"][0]["severity"] for e in warned["entry"] if e["search"]["mode"] == "outcome"] == [
        "warning"]
    summary_count = {"request": {"method": "GET", "url": f"Patient/bg-{kind}-0?_summary=count"}}
    bad = {**bundle, "type": "batch", "entry": [summary_count]}
    assert (await c.post("/fhir", json=bad)).json()["entry"][0]["response"]["status"] == "400"


@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_bundle_entries_take_prefer_return_operation_outcome(api: ApiHarness, kind: str) -> None:
    # http.html#ops: return=OperationOutcome asks for an outcome instead of the resource, as each
    # entry of a batch or transaction answers (it got the resources, as without the header).
    c = api.client
    assert (await c.put(f"/fhir/Patient/oo-{kind}", json={"resourceType": "Patient", "id": f"oo-{kind}"})).is_success
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": f"oo-{kind}", "gender": "male"},
         "request": {"method": "PUT", "url": f"Patient/oo-{kind}"}},
        {"request": {"method": "GET", "url": f"Patient/oo-{kind}"}},
    ]}
    answer = await c.post("/fhir", json=bundle, headers={"Prefer": "return=OperationOutcome"})
    assert answer.status_code == 200
    created, updated, read = answer.json()["entry"]
    for entry, text in ((created, "version 1 created"), (updated, f"Patient/oo-{kind} version 2 stored")):
        assert "resource" not in entry
        outcome = entry["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "information"
        assert outcome["issue"][0]["diagnostics"].endswith(text)
    assert read["resource"]["gender"] == "male" and "outcome" not in read["response"]


async def test_format_takes_an_unescaped_plus_and_refuses_other_fhir_versions(api: ApiHarness) -> None:
    c = api.client
    assert (await c.put("/fhir/Patient/fmt1", json={"resourceType": "Patient", "id": "fmt1"})).status_code == 201
    plain = await c.get("/fhir/Patient/fmt1?_format=application/fhir+json")  # "+" reads as a space
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/fhir+json")
    assert (await c.get("/fhir/Patient/fmt1", params={"_format": "application/fhir+json;fhirVersion=4.0"})).is_success
    other = await c.get("/fhir/Patient/fmt1", params={"_format": "application/fhir+json;fhirVersion=5.0"})
    assert_outcome(other, 406, "not-supported")
    assert_outcome(await c.get("/fhir/Patient/fmt1?_format=application/fhir+xml"), 406, "not-supported")


async def test_summary_count_has_no_next_link(api: ApiHarness) -> None:
    # _summary=count answers a total without entries: a next link would page through nothing.
    c = api.client
    for n in range(3):
        patient = {"resourceType": "Patient", "id": f"cnt{n}", "name": [{"family": "countonly"}]}
        assert (await c.put(f"/fhir/Patient/cnt{n}", json=patient)).status_code == 201
    params = {"family": "countonly", "_summary": "count", "_count": "1"}
    counted = (await c.get("/fhir/Patient", params=params)).json()
    assert counted["total"] == 3 and "entry" not in counted
    assert [link["relation"] for link in counted["link"]] == ["self"]
    get = {"request": {"method": "GET", "url": "Patient?family=countonly&_summary=count&_count=1"}}
    answer = (await c.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [get]})).json()
    assert [link["relation"] for link in answer["entry"][0]["resource"]["link"]] == ["self"]


async def test_the_fhir_version_parameter_of_media_types_must_be_r4(api: ApiHarness) -> None:
    c = api.client
    body = {"resourceType": "Patient", "id": "fv1"}
    r4 = await c.put("/fhir/Patient/fv1", json=body, headers={"Content-Type": "application/fhir+json; fhirVersion=4.0"})
    assert r4.status_code == 201
    assert_outcome(await c.put("/fhir/Patient/fv1", json=body,
                               headers={"Content-Type": "application/fhir+json; fhirVersion=5.0"}), 415)  # fmt: skip
    accept_r4 = {"Accept": "application/fhir+json; fhirVersion=4.0"}
    assert (await c.get("/fhir/Patient/fv1", headers=accept_r4)).status_code == 200
    assert_outcome(await c.get("/fhir/Patient/fv1", headers={"Accept": "application/fhir+json; fhirVersion=3.0"}), 406)
    either = {"Accept": "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0"}
    assert (await c.get("/fhir/Patient/fv1", headers=either)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/fhir/Foo/1"), ("GET", "/fhir/Patient/a$b"), ("PUT", "/fhir/Foo/1"), ("DELETE", "/fhir/Patient/a$b"),
     ("GET", "/fhir/Foo"), ("GET", "/fhir/Patient/a$b/$everything"), ("GET", "/fhir/Foo/_history")],
)
async def test_without_a_token_anything_but_the_open_endpoints_is_401_first(
    api: ApiHarness, method: str, path: str
) -> None:
    response = await api.anonymous().request(method, path)
    assert_outcome(response, 401)
    assert "Foo" not in response.text and "a$b" not in response.text


async def test_compressed_request_bodies_are_inflated_within_the_body_limit(api: ApiHarness) -> None:
    c = api.client
    patient = orjson.dumps({"resourceType": "Patient", "id": "gz1", "gender": "female"})
    for encoding, data in (("gzip", gzip.compress(patient)), ("deflate", zlib.compress(patient)),
                           ("identity", patient), ("gzip, identity", gzip.compress(patient))):
        response = await c.put("/fhir/Patient/gz1", content=data,
                               headers={"Content-Encoding": encoding, "Content-Type": "application/fhir+json"})
        assert response.status_code in (200, 201), (encoding, response.text)
        assert response.json()["gender"] == "female"
    photo = base64.b64encode(os.urandom(120_000)).decode()
    pictured = {"resourceType": "Patient", "id": "gz2", "photo": [{"contentType": "image/png", "data": photo}]}
    big = gzip.compress(orjson.dumps(pictured))
    assert len(big) > 64 * 1024  # inflated off the event loop
    answer = await c.put("/fhir/Patient/gz2", content=big, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 201 and answer.json()["photo"][0]["data"] == photo
    bomb = gzip.compress(b" " * (11 * 1024 * 1024))  # 11 KB that inflate past the 10 MiB limit
    assert_outcome(await c.post("/fhir/Patient", content=bomb, headers={"Content-Encoding": "gzip"}), 413, "too-costly")
    assert_outcome(await c.post("/fhir/Patient", content=patient, headers={"Content-Encoding": "gzip"}), 400)
    assert_outcome(await c.post("/fhir/Patient", content=gzip.compress(patient)[:-4],
                                headers={"Content-Encoding": "gzip"}), 400)  # fmt: skip
    for unsupported in ("br", "compress", "gzip, gzip"):
        assert_outcome(await c.post("/fhir/Patient", content=patient, headers={"Content-Encoding": unsupported}), 415)


async def test_a_bundle_url_urlsplit_refuses_is_a_400(api: ApiHarness) -> None:
    """A request.url Python's URL parser refuses (an unclosed IPv6 bracket) answers 400, not 500."""
    for url in ("//[::1/Patient", "//[oops"):
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": url}}]}
        answer = (await api.client.post("/fhir", json=bundle)).json()["entry"][0]["response"]
        assert answer["status"] == "400" and "not a URL" in answer["outcome"]["issue"][0]["diagnostics"], url
