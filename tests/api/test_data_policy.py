"""Per-client data policies (issue 11): a client limited to an organisation subtree, a
district or one Patient's compartment sees only those Patients and their data, on every
path that returns resources, on both store backends.

The seed is two districts. District A: Organization ``dist-a`` with health centre
``hc-a`` (partOf dist-a) and health post ``hp-a`` (partOf hc-a); Patients ``pa1``
(managed by hp-a, two levels down), ``pa2`` (no organisation, address district
"Gasabo"). District B: ``dist-b``/``hc-b``; Patients ``pb1`` (managed by hc-b), ``pb2``
(managed by dist-b, address district "Kicukiro"). Each Patient has an Observation and an
Encounter; ``ox`` is about pa1 but names pb1 as performer; a Location is nobody's.
Every hidden resource carries the marker ``HIDDEN`` in a name or note, so a response that
leaks any of it shows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from gateway.settings import Settings
from gateway.store import GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM, KEPT_LINK_EXTENSION, ClientRegistry
from tests.conftest import ApiHarness, make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The API on each store backend."""
    return Settings(store_url=store_url, rate_limit=MACHINE_SPEED_LIMITS)


def _org(rid: str, parent: str | None = None) -> dict[str, Any]:
    org: dict[str, Any] = {"resourceType": "Organization", "id": rid, "name": rid}
    if parent:
        org["partOf"] = {"reference": f"Organization/{parent}"}
    return org


def _patient(rid: str, family: str, org: str | None = None, district: str | None = None) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": rid, "name": [{"family": family}],
                               "identifier": [{"system": "urn:test:nid", "value": f"nid-{rid}"}],
                               "birthDate": "1990-05-17"}
    if org:
        patient["managingOrganization"] = {"reference": f"Organization/{org}"}
    if district:
        patient["address"] = [{"line": ["Plot 7"], "city": "Town", "district": district, "country": "RW"}]
    return patient


def _obs(rid: str, patient: str, code: str, note: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": [{"code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "note": [{"text": note}], **extra}


def _enc(rid: str, patient: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": rid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": f"Patient/{patient}"}}


SEED: list[dict[str, Any]] = [
    _org("dist-a"), _org("hc-a", "dist-a"), _org("hp-a", "hc-a"), _org("dist-b"), _org("hc-b", "dist-b"),
    _patient("pa1", "Uwase", org="hp-a"),
    _patient("pa2", "Mukamana", district="Gasabo"),
    _patient("pb1", "HIDDEN-Habimana", org="hc-b"),
    _patient("pb2", "HIDDEN-Niyonzima", org="dist-b", district="Kicukiro"),
    _obs("oa1", "pa1", "HIV-POS", "seen"), _obs("oa2", "pa2", "TB-NEG", "seen"),
    _obs("ob1", "pb1", "HIV-NEG", "HIDDEN note"), _obs("ob2", "pb2", "TB-POS", "HIDDEN note"),
    _obs("ox", "pa1", "BP", "seen", performer=[{"reference": "Patient/pb1"}]),
    _enc("ea1", "pa1"), _enc("ea2", "pa2"), _enc("eb1", "pb1"), _enc("eb2", "pb2"),
    {"resourceType": "Location", "id": "loc1", "name": "Village well"},
]
ALL = {f"{r['resourceType']}/{r['id']}" for r in SEED}
ORGS_AND_PLACES = {f"{r['resourceType']}/{r['id']}" for r in SEED if r["resourceType"] in ("Organization", "Location")}

# Policy -> the Patients it shows. Data about a Patient is visible when it refers to a visible one.
POLICIES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "org-subtree": ({"organizations": ["Organization/dist-a"]}, {"pa1"}),
    "district": ({"districts": ["gasabo"]}, {"pa2"}),
    "org-or-district": ({"organizations": ["Organization/dist-a"], "districts": ["Gasabo"]}, {"pa1", "pa2"}),
    "one-patient": ({"patients": ["Patient/pa2"]}, {"pa2"}),
    "health-centre": ({"organizations": ["Organization/hc-b"]}, {"pb1"}),
}


def visible(patients: set[str]) -> set[str]:
    """Everything a client seeing ``patients`` may get."""
    shown = set(ORGS_AND_PLACES) | {f"Patient/{p}" for p in patients}
    for r in SEED:
        refs = [r.get("subject", {}).get("reference")] + [p["reference"] for p in r.get("performer", [])]
        if any(ref and ref.split("/")[1] in patients for ref in refs):
            shown.add(f"{r['resourceType']}/{r['id']}")
    return shown


async def seed(api: ApiHarness) -> None:
    for resource in SEED:
        response = await api.client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text


def policy_client(
    api: ApiHarness, policy: dict[str, Any], scopes: tuple[str, ...] = ("system/*.cruds",)
) -> httpx.AsyncClient:
    store: ClientRegistry = api.store
    name = f"emr-{uuid.uuid4().hex[:8]}"
    token = make_token(store, scopes, name=name)
    assert store.set_client_policy(name, policy)
    return api.with_scopes(token=token)


def refs_in(body: dict[str, Any]) -> set[str]:
    """Every resource a Bundle (of any depth) or a resource answer carries."""
    found: set[str] = set()
    if body.get("resourceType") == "Bundle":
        for entry in body.get("entry", []):
            if "resource" in entry:
                found |= refs_in(entry["resource"])
    elif "id" in body and body.get("resourceType") != "OperationOutcome":
        found.add(f"{body['resourceType']}/{body['id']}")
    return found


@pytest.fixture(params=sorted(POLICIES))
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], set[str]]:
    return POLICIES[request.param]


async def test_every_read_path_returns_only_what_the_policy_shows(api: ApiHarness, case: Any) -> None:
    policy, patients = case
    await seed(api)
    client = policy_client(api, policy)
    allowed = visible(patients)
    hidden = ALL - allowed
    # The seed's writes left Provenance naming their client: one about a Patient's record is
    # that Patient's data, visible with it (the policy's rule); the others are hidden.
    provenance = (await api.client.get("/fhir/Provenance", params={"_count": "1000"})).json()
    for entry in provenance.get("entry", []):
        about = {t["reference"].split("/_history")[0] for t in entry["resource"]["target"]}
        ref = f"Provenance/{entry['resource']['id']}"
        shown_with = {f"Patient/{p}" for p in patients}
        (allowed if about & shown_with else hidden).add(ref)
    seen: set[str] = set()

    async def get(url: str, **params: Any) -> dict[str, Any]:
        response = await client.get(url, params=params)
        assert response.status_code == 200, (url, response.text)
        if not any(p in allowed for p in ("Patient/pb1", "Patient/pb2")):
            assert "HIDDEN" not in response.text, url
        body: dict[str, Any] = response.json()
        seen.update(refs_in(body))
        return body

    # read, vread and instance history: 200 for visible resources, 404 for hidden ones
    for ref in sorted(ALL):
        for suffix in ("", "/_history/1", "/_history"):
            response = await client.get(f"/fhir/{ref}{suffix}")
            assert response.status_code == (200 if ref in allowed else 404), (ref, suffix, response.text)
    # searches, with includes, revincludes, chains, _has, POST _search, paging
    for rtype in ("Patient", "Observation", "Encounter", "Organization", "Location"):
        body = await get(f"/fhir/{rtype}")
        assert body["total"] == len({r for r in allowed if r.startswith(rtype + "/")})
    await get("/fhir/Observation", _include="Observation:performer")
    await get("/fhir/Observation", _include="Observation:subject", _count="1")
    await get("/fhir/Patient", _revinclude="Observation:subject")
    await get("/fhir/Patient", _revinclude="Observation:performer")
    await get("/fhir/Organization", _revinclude="Patient:organization")
    chained = await get("/fhir/Observation", **{"subject:Patient.identifier": "nid-pb1"})
    assert {e["resource"]["id"] for e in chained.get("entry", [])} <= {"ob1"} & {r.split("/")[1] for r in allowed}
    has = await get("/fhir/Patient", **{"_has:Observation:subject:code": "HIV-NEG"})
    assert refs_in(has) <= {"Patient/pb1"} & allowed
    has_performer = await get("/fhir/Patient", **{"_has:Observation:performer:code": "BP"})
    assert refs_in(has_performer) <= {"Patient/pb1"} & allowed
    posted = await client.post("/fhir/Encounter/_search", content=b"_count=50",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 200 and refs_in(posted.json()) == {r for r in allowed if r.startswith("Encounter/")}
    # type and system history, all of it and the versions current this year or last (_at: all again)
    years = [str(datetime.now(UTC).year - 1), str(datetime.now(UTC).year)]
    for url in ("/fhir/Patient/_history", "/fhir/Observation/_history", "/fhir/_history"):
        body = await get(url)
        assert refs_in(body) <= allowed
        assert refs_in(await get(url, _at=years)) == refs_in(body)
    # $everything
    for patient in ("pa1", "pa2", "pb1", "pb2"):
        response = await client.get(f"/fhir/Patient/{patient}/$everything")
        if patient in patients:
            assert response.status_code == 200
            seen.update(refs_in(response.json()))
            assert response.json()["total"] == len(refs_in(response.json()))
        else:
            assert response.status_code == 404
    # batch reads and searches
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"{ref}"}} for ref in sorted(ALL)
    ] + [{"request": {"method": "GET", "url": "Observation?_include=Observation:performer"}}]}
    response = await client.post("/fhir", json=batch)
    assert response.status_code == 200
    statuses = {ref: e["response"]["status"] for ref, e in zip(sorted(ALL), response.json()["entry"], strict=False)}
    assert {ref for ref, status in statuses.items() if status.startswith("200")} == allowed & ALL
    seen.update(refs_in(response.json()))

    assert seen <= allowed, seen & hidden
    assert {r for r in allowed if not r.startswith("Provenance/")} <= seen  # every visible resource was reachable


async def test_writes_stay_inside_the_policy(api: ApiHarness) -> None:
    await seed(api)
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    seq = api.store.last_change_seq()

    def outside(response: httpx.Response) -> None:
        assert response.status_code == 403, response.text
        assert "data policy" in response.json()["issue"][0]["diagnostics"]

    # data about a hidden Patient, or a Patient outside the subtree, cannot be written
    outside(await client.post("/fhir/Observation", json=_obs("n1", "pb1", "X", "n")))
    outside(await client.put("/fhir/Observation/ob1", json=_obs("ob1", "pa1", "X", "n")))
    outside(await client.put("/fhir/Observation/oa1", json=_obs("oa1", "pb1", "X", "moved away")))
    outside(await client.delete("/fhir/Observation/ob1"))
    outside(await client.post("/fhir/Patient", json=_patient("x", "New", org="hc-b")))
    outside(await client.put("/fhir/Patient/pa1", json=_patient("pa1", "Uwase", org="hc-b")))
    patch = await client.patch("/fhir/Patient/pb1", json=[{"op": "replace", "path": "/birthDate", "value": "1991"}],
                               headers={"Content-Type": "application/json-patch+json"})
    assert patch.status_code == 403
    conditional = await client.delete("/fhir/Observation", params={"code": "HIV-NEG"})
    assert conditional.status_code == 200 and "0 Observation" in conditional.text
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _obs("t1", "pa1", "X", "n"), "request": {"method": "PUT", "url": "Observation/t1"}},
        {"resource": _obs("t2", "pb2", "X", "n"), "request": {"method": "PUT", "url": "Observation/t2"}},
    ]}
    outside(await client.post("/fhir", json=transaction))
    # a conditional reference cannot find a hidden Patient either
    ref = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "X"}]},
           "subject": {"reference": "Patient?identifier=nid-pb1"}}
    conditional_ref = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": ref, "request": {"method": "POST", "url": "Observation"}}]})
    assert conditional_ref.status_code in (400, 404, 412), conditional_ref.text
    assert api.store.last_change_seq() == seq  # nothing above changed the store

    # inside the policy, writes work: new data about a visible Patient, a Patient in the subtree
    created = await client.post("/fhir/Observation", json=_obs("n2", "pa1", "X", "n"))
    assert created.status_code == 201, created.text
    patient = await client.post("/fhir/Patient", json=_patient("x", "New", org="hc-a"))
    assert patient.status_code == 201, patient.text
    assert (await client.get(f"/fhir/Patient/{patient.json()['id']}")).status_code == 200


async def test_a_policy_follows_the_organisation_tree_as_it_changes(api: ApiHarness) -> None:
    await seed(api)
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    assert (await client.get("/fhir/Patient/pb1")).status_code == 404
    # hc-b moves under dist-a: its Patients (and their data) come into view
    assert (await api.client.put("/fhir/Organization/hc-b", json=_org("hc-b", "dist-a"))).status_code == 200
    await asyncio.sleep(1.05)  # a looked-up subtree serves for at most 1 s
    assert (await client.get("/fhir/Patient/pb1")).status_code == 200
    assert (await client.get("/fhir/Observation/ob1")).status_code == 200
    assert (await client.get("/fhir/Patient/pb2")).status_code == 404


async def test_a_client_cannot_widen_its_own_organisation_subtree(api: ApiHarness) -> None:
    """Organizations are not limited rows, but their partOf decides what an organisations policy shows:
    a client limited to dist-a that moves hc-b under dist-a (or creates an Organization that hc-b or a
    Patient already names) would see hc-b's Patients. Such a write is refused (REST, patch, conditional
    update and Bundles); writes that leave the subtree as wide as it was still work."""
    await seed(api)
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    seq = api.store.last_change_seq()

    def refused(response: httpx.Response) -> None:
        assert response.status_code == 403, response.text
        assert "data policy" in response.json()["issue"][0]["diagnostics"]

    refused(await client.put("/fhir/Organization/hc-b", json=_org("hc-b", "hp-a")))
    refused(await client.put("/fhir/Organization?name=hc-b", json=_org("hc-b", "dist-a")))
    refused(await client.patch("/fhir/Organization/hc-b",
                               json=[{"op": "add", "path": "/partOf", "value": {"reference": "Organization/hc-a"}}],
                               headers={"Content-Type": "application/json-patch+json"}))
    # hc-b's parent dist-b is deleted (an admin's write): recreating it under dist-a would bring hc-b along
    assert (await api.client.delete("/fhir/Organization/dist-b")).status_code in (200, 204)
    seq = api.store.last_change_seq()
    refused(await client.put("/fhir/Organization/dist-b", json=_org("dist-b", "dist-a")))
    refused(await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _org("dist-b", "hc-a"), "request": {"method": "PUT", "url": "Organization/dist-b"}}]}))
    batch = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _org("hc-b", "dist-a"), "request": {"method": "PUT", "url": "Organization/hc-b"}}]})
    assert batch.json()["entry"][0]["response"]["status"].startswith("403"), batch.text
    assert api.store.last_change_seq() == seq  # nothing above changed the store
    await asyncio.sleep(1.05)  # a looked-up subtree serves for at most 1 s
    for hidden in ("/fhir/Patient/pb1", "/fhir/Patient/pb2", "/fhir/Observation/ob1"):
        assert (await client.get(hidden)).status_code == 404, hidden
    # Writes that do not widen the subtree: an Organization of its own tree edited or moved within it,
    # a new one nobody names yet, one outside its tree edited in place.
    moved = {**_org("hp-a", "dist-a"), "alias": ["HP"]}
    assert (await client.put("/fhir/Organization/hp-a", json=moved)).status_code == 200
    assert (await client.put("/fhir/Organization/new-hp", json=_org("new-hp", "hc-a"))).status_code == 201
    assert (await client.put("/fhir/Organization/hc-b", json={**_org("hc-b"), "alias": ["B"]})).status_code == 200
    assert (await client.get("/fhir/Patient/pa1")).status_code == 200


async def test_an_older_version_about_a_hidden_patient_stays_hidden(api: ApiHarness) -> None:
    """A resource moved from a hidden Patient to a visible one: the client sees it now, and its versions
    that are about the visible Patient, but not the version about the hidden one (vread, history, a
    Bundle's vread)."""
    await seed(api)
    moved = _obs("om", "pb1", "HIV-NEG", "HIDDEN note about pb1")
    assert (await api.client.put("/fhir/Observation/om", json=moved)).status_code == 201
    assert (await api.client.put("/fhir/Observation/om", json=_obs("om", "pa1", "HIV-NEG", "seen"))).status_code == 200
    assert (await api.client.put("/fhir/Observation/om", json=_obs("om", "pa1", "HIV-POS", "seen"))).status_code == 200
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    assert (await client.get("/fhir/Observation/om")).status_code == 200
    assert (await client.get("/fhir/Observation/om/_history/2")).status_code == 200
    assert (await client.get("/fhir/Observation/om/_history/1")).status_code == 404
    years = f"_at={datetime.now(UTC).year - 1}&_at={datetime.now(UTC).year}"  # every version, by _at
    for url in ("/fhir/Observation/om/_history", "/fhir/Observation/_history?_count=100", "/fhir/_history?_count=100",
                f"/fhir/Observation/om/_history?{years}", f"/fhir/_history?_count=100&{years}"):
        response = await client.get(url)
        assert response.status_code == 200 and "HIDDEN" not in response.text, url
        versions = {e["resource"]["meta"]["versionId"] for e in response.json()["entry"]
                    if e["resource"]["id"] == "om"}
        assert versions == {"2", "3"}, url
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/om/_history/{v}"}} for v in (1, 2)]}
    answers = (await client.post("/fhir", json=bundle)).json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["404", "200"]
    assert "HIDDEN" not in str(answers)
    # The admin, with no policy, still sees every version.
    assert (await api.client.get("/fhir/Observation/om/_history/1")).status_code == 200


async def test_a_deidentified_client_gets_no_identifying_elements(api: ApiHarness) -> None:
    await seed(api)
    researcher = policy_client(api, {"deidentify": True}, scopes=("system/*.rs",))
    patient = (await researcher.get("/fhir/Patient/pb2")).json()
    assert patient["birthDate"] == "1990"
    assert "name" not in patient and "identifier" not in patient
    assert patient["address"] == [{"district": "Kicukiro", "country": "RW"}]
    paths = ["/fhir/Patient", "/fhir/Observation?_include=Observation:performer", "/fhir/Patient/pb1/_history",
             "/fhir/Patient/pb2/$everything", "/fhir/_history?_count=100"]
    for path in paths:
        response = await researcher.get(path)
        assert response.status_code == 200, path
        assert "HIDDEN" not in response.text and "nid-" not in response.text, path
    batch = await researcher.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pb1"}},
        {"request": {"method": "GET", "url": "Patient?_count=9"}}]})
    assert batch.status_code == 200 and "HIDDEN" not in batch.text and "nid-" not in batch.text
    # the same data in full for a client without the policy
    assert "HIDDEN" in (await api.client.get("/fhir/Patient/pb1")).text


async def test_a_deidentified_client_gets_no_identifying_elements_back_from_its_writes(api: ApiHarness) -> None:
    # A write's answer is the stored resource: a matched If-None-Exist, an update keeping what the
    # gateway wrote. (Such a client may not patch: see the JSON Patch test below.)
    await seed(api)
    researcher = policy_client(api, {"deidentify": True}, scopes=("system/*.cruds",))
    matched = await researcher.post("/fhir/Patient", json={"resourceType": "Patient"},
                                    headers={"If-None-Exist": "_id=pb1"})
    assert matched.status_code == 200 and matched.json()["id"] == "pb1"
    assert "HIDDEN" not in matched.text and "nid-" not in matched.text, matched.text
    assert matched.json()["birthDate"] == "1990"
    sent = {**_patient("pb2", "HIDDEN-Niyonzima", org="dist-b"), "active": False}
    for response in (await researcher.put("/fhir/Patient/pb2", json=sent),
                     await researcher.put("/fhir/Patient?_id=pb2", json=sent)):
        assert response.status_code == 200 and "HIDDEN" not in response.text and "nid-" not in response.text
    # The same answer in full for a client without the policy.
    full = await api.client.post("/fhir/Patient", json={"resourceType": "Patient"},
                                 headers={"If-None-Exist": "_id=pb1"})
    assert "HIDDEN" in full.text and "nid-pb1" in full.text


async def test_a_deidentified_client_cannot_read_what_is_stripped_through_json_patch(api: ApiHarness) -> None:
    # A JSON Patch test that passes or fails is a read of the value it names, copy/move put a
    # stripped value where the answer shows it, and whether even an add applies (a name's period
    # end against its start) tells what is stored: a de-identified client may not patch, in a
    # Bundle neither; it may replace a resource whole.
    await seed(api)
    researcher = policy_client(api, {"deidentify": True}, scopes=("system/*.cruds",))
    patches = [
        [{"op": "test", "path": "/name/0/family", "value": "HIDDEN-Niyonzima"}],
        [{"op": "copy", "from": "/identifier/0/value", "path": "/address/0/district"}],
        [{"op": "move", "from": "/name/0/family", "path": "/address/0/state"}],
        [{"op": "add", "path": "/name/0/period", "value": {"end": "2020-01-01"}}],
        [{"op": "add", "path": "/active", "value": True}],
    ]
    for operations in patches:
        response = await researcher.patch("/fhir/Patient/pb2", json=operations,
                                          headers={"Content-Type": "application/json-patch+json"})
        assert response.status_code == 403, (operations, response.text)
        assert "HIDDEN" not in response.text and "nid-" not in response.text
        binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                  "data": base64.b64encode(json.dumps(operations).encode()).decode()}
        for kind in ("batch", "transaction"):
            bundle = {"resourceType": "Bundle", "type": kind, "entry": [
                {"resource": binary, "request": {"method": "PATCH", "url": "Patient/pb2"}}]}
            answer = await researcher.post("/fhir", json=bundle)
            assert "HIDDEN" not in answer.text and "nid-" not in answer.text, answer.text
            status = answer.json()["entry"][0]["response"]["status"] if kind == "batch" else str(answer.status_code)
            assert status.startswith("403"), (kind, answer.text)
    stored = (await api.client.get("/fhir/Patient/pb2")).json()
    assert stored["meta"]["versionId"] == "1" and stored["address"][0]["district"] == "Kicukiro"
    # A client without the policy may still test.
    tested = await api.client.patch("/fhir/Patient/pb2", json=patches[0],
                                    headers={"Content-Type": "application/json-patch+json"})
    assert tested.status_code == 200


async def test_a_deidentified_client_cannot_search_or_sort_by_what_it_does_not_see(api: ApiHarness) -> None:
    await seed(api)
    provenance = {"resourceType": "Provenance", "id": "prov1", "recorded": "2026-12-01T10:00:00Z",
                  "target": [{"reference": "Patient/pb2"}], "agent": [{"who": {"display": "CHW"}}],
                  "entity": [{"role": "source", "what": {"identifier": {"system": "urn:case", "value": "nid-case-7"}}}]}
    assert (await api.client.put("/fhir/Provenance/prov1", json=provenance)).status_code == 201
    researcher = policy_client(api, {"deidentify": True}, scopes=("system/*.rs",))
    refused = [
        "/fhir/Patient?family=HIDDEN-Niyonzima", "/fhir/Patient?name=Uwase", "/fhir/Patient?given=x",
        "/fhir/Patient?identifier=nid-pb2", "/fhir/Patient?identifier:not=x", "/fhir/Patient?address=Plot",
        "/fhir/Patient?address-city=Town", "/fhir/Patient?birthdate=1990-05-17", "/fhir/Patient?birthdate=lt1990-06",
        "/fhir/Patient?birthdate=ap1990", "/fhir/Observation?subject:Patient.birthdate=ap1990",
        "/fhir/Patient?_sort=birthdate", "/fhir/Patient?_sort=family", "/fhir/Observation?identifier=x",
        "/fhir/Observation?subject:Patient.family=Uwase", "/fhir/Observation?patient.identifier=nid-pa1",
        "/fhir/Patient?_has:Observation:patient:identifier=x",
        "/fhir/Practitioner?name=x", "/fhir/Patient?telecom=123",
    ]
    for path in refused:
        response = await researcher.get(path)
        assert response.status_code == 403, (path, response.text)
        issue = response.json()["issue"][0]
        assert issue["code"] == "forbidden" and ("de-identif" in issue["diagnostics"] or "year" in issue["diagnostics"])
    posted = await researcher.post("/fhir/Patient/_search", data={"family": "Uwase"})
    assert posted.status_code == 403
    in_batch = await researcher.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?birthdate=1990-05-17"}}]})
    assert in_batch.json()["entry"][0]["response"]["status"].startswith("403")
    # What it sees, it may search by: the year, the district, codes, references.
    for path, expected in [("/fhir/Patient?birthdate=1990", 4), ("/fhir/Patient?birthdate=ge1990,1991", 4),
                           ("/fhir/Patient?address-state=x", 0), ("/fhir/Observation?code=TB-POS", 1),
                           ("/fhir/Observation?subject=Patient/pa1", 2), ("/fhir/Patient?birthdate:missing=true", 0)]:
        response = await researcher.get(path)
        assert response.status_code == 200 and response.json()["total"] == expected, (path, response.text)
    # A Reference's identifier is stripped too (it named the case the Patient came from).
    read = await researcher.get("/fhir/Provenance/prov1")
    assert read.status_code == 200 and "nid-case-7" not in read.text and read.json()["entity"][0]["role"] == "source"
    # The same searches for a client without the policy.
    assert (await api.client.get("/fhir/Patient?family=HIDDEN-Niyonzima")).json()["total"] == 1


async def test_configured_policy_wins_and_a_broken_stored_one_fails_closed(store_url: str) -> None:
    from gateway.api.app import create_app
    from gateway.store import open_store

    settings = Settings(store_url=store_url, rate_limit=MACHINE_SPEED_LIMITS,
                        client_policies={"cfg-emr": {"patients": ["Patient/pa2"]}})
    store = open_store(store_url)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        api = ApiHarness(app, store)
        await seed(api)
        token = make_token(store, ("system/*.rs",), name="cfg-emr")
        store.set_client_policy("cfg-emr", {"organizations": ["Organization/dist-b"]})  # the config overrides this
        broken = make_token(store, ("system/*.rs",), name="broken")
        store.set_client_policy("broken", {"unknown": 1})
        cfg = api.with_scopes(token=token)
        assert refs_in((await cfg.get("/fhir/Patient")).json()) == {"Patient/pa2"}
        assert refs_in((await api.with_scopes(token=broken).get("/fhir/Patient")).json()) == set()
        await api.aclose()
    store.close()


def test_policies_in_the_configuration_are_checked() -> None:
    with pytest.raises(ValueError, match="emr: organizations: 'hc-b' is not a Organization reference"):
        Settings(client_policies={"emr": {"organizations": ["hc-b"]}})
    with pytest.raises(ValueError, match="unknown data policy key 'district'"):
        Settings(client_policies={"emr": {"district": ["x"]}})


async def test_a_smart_access_token_carries_its_clients_policy(api: ApiHarness) -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.auth import ACCESS_TOKEN_PREFIX, hash_token

    await seed(api)
    policy_client(api, {"organizations": ["Organization/dist-a"]})  # registers a client with a policy
    name = next(c.name for c in api.store.list_clients() if c.policy)
    token = f"{ACCESS_TOKEN_PREFIX}{uuid.uuid4().hex}"
    expires = datetime.now(UTC) + timedelta(minutes=5)
    api.store.save_access_token(hash_token(token), name, ["system/Patient.rs"], expires)
    client = api.with_scopes(token=token)
    assert refs_in((await client.get("/fhir/Patient")).json()) == {"Patient/pa1"}
    assert (await client.get("/fhir/Patient/pb1")).status_code == 404


async def test_everything_leaves_out_linked_patients_the_policy_does_not_show(api: ApiHarness) -> None:
    """A Patient linking to a visible one (another source's record of the person, its golden record)
    is in that one's compartment, but the policy judges a Patient by itself: $everything leaves it out."""
    await seed(api)
    linked = {**_patient("pb3", "HIDDEN-Uwase", org="hc-b"), "link": [{"other": {"reference": "Patient/pa1"},
                                                                        "type": "seealso"}]}
    assert (await api.client.put("/fhir/Patient/pb3", json=linked)).status_code == 201
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    assert (await client.get("/fhir/Patient/pb3")).status_code == 404
    response = await client.get("/fhir/Patient/pa1/$everything")
    assert response.status_code == 200
    assert "HIDDEN" not in response.text
    body = response.json()
    assert body["total"] == len(refs_in(body)) and "Patient/pa1" in refs_in(body)
    # paged, the total and the pages agree
    paged = (await client.get("/fhir/Patient/pa1/$everything", params={"_count": "1", "_offset": "1"})).json()
    assert paged["total"] == body["total"] and "HIDDEN" not in str(paged)
    # a client whose policy shows both still gets the linked record
    both = policy_client(api, {"organizations": ["Organization/dist-a", "Organization/hc-b"]})
    assert "Patient/pb3" in refs_in((await both.get("/fhir/Patient/pa1/$everything")).json())


def _kept(kind: str, target: str) -> dict[str, Any]:
    """A link as the identity matcher writes it (marked as the gateway's own)."""
    return {"other": {"reference": f"Patient/{target}"}, "type": kind,
            "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": "score 22.2"}]}


@pytest.mark.parametrize("policy", [{"organizations": ["Organization/dist-a"]}, {"districts": ["Gasabo"]}])
async def test_identity_links_and_golden_records_do_not_reach_a_row_limited_client(
    api: ApiHarness, policy: dict[str, Any]
) -> None:
    """The matcher links a visible Patient to another source's record of the person (hidden) and
    to a golden record combining both: the golden record (with the hidden one's name, address and
    identifiers) is not shown to a client whose policy limits rows, nor are the matcher's links
    (they name the hidden record and that it is the same person); a link the client wrote stays."""
    await seed(api)
    golden = {"resourceType": "Patient", "id": "gold1", "managingOrganization": {"reference": "Organization/hp-a"},
              "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]},
              "name": [{"family": "HIDDEN-Merged"}], "address": [{"district": "Gasabo"}, {"district": "Kicukiro"}],
              "link": [_kept("seealso", "pa2"), _kept("seealso", "pb2")]}
    with api.store.transaction() as tx:
        tx.update(golden)
        pa2 = orjson.loads(tx.read("Patient", "pa2").content)  # type: ignore[union-attr]
        pa2["link"] = [{"other": {"reference": "Patient/pa1"}, "type": "seealso"},  # the client's own
                       _kept("seealso", "pb2"), _kept("refer", "gold1")]
        tx.update(pa2)
        pa2["managingOrganization"] = {"reference": "Organization/hp-a"}
        tx.update(pa2)
    client = policy_client(api, policy)
    assert (await client.get("/fhir/Patient/gold1")).status_code == 404
    tagged = (await client.get("/fhir/Patient", params={"_tag": f"{GOLDEN_TAG_SYSTEM}|{GOLDEN_TAG_CODE}"})).json()
    assert tagged["total"] == 0
    everyone = await client.get("/fhir/Patient", params={"_count": "100"})
    assert "gold1" not in {e["resource"]["id"] for e in everyone.json()["entry"]}
    for path in ("/fhir/Patient/pa2", "/fhir/Patient/pa2/_history", "/fhir/Patient/pa2/$everything",
                 "/fhir/Observation?subject=pa2&_include=Observation:subject"):
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "pb2" not in answer.text and "gold1" not in answer.text and "HIDDEN" not in answer.text, path
    own = (await client.get("/fhir/Patient/pa2")).json()["link"]
    assert own == [{"other": {"reference": "Patient/pa1"}, "type": "seealso"}]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pa2"}}, {"request": {"method": "GET", "url": "Patient?_id=pa2"}}]}
    answer = await client.post("/fhir", json=batch)
    assert answer.status_code == 200 and "pb2" not in answer.text and "gold1" not in answer.text
    # its own update keeps the matcher's links in the store, and answers without them
    current = (await client.get("/fhir/Patient/pa2")).json()
    updated = await client.put("/fhir/Patient/pa2", json={**current, "gender": "female"},
                               headers={"Prefer": "return=representation"})
    assert updated.status_code == 200 and "pb2" not in updated.text and "gold1" not in updated.text
    # a client without a row limit (the trusted one) still sees the links and the golden record
    assert len((await api.client.get("/fhir/Patient/pa2")).json()["link"]) == 3  # kept by the update
    assert (await api.client.get("/fhir/Patient/gold1")).status_code == 200


async def test_a_row_limited_client_cannot_search_or_patch_through_the_matchers_links(api: ApiHarness) -> None:
    """What the matcher linked shows through no search (filters, :missing, sorts, chains, _has,
    includes: the index rows do not tell its links from a client's) and no patch (a test or copy
    of a link sees the resource as the client reads it); the links stay stored."""
    await seed(api)
    with api.store.transaction() as tx:
        pa1 = orjson.loads(tx.read("Patient", "pa1").content)  # type: ignore[union-attr]
        tx.update({**pa1, "link": [_kept("seealso", "pb1")]})
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    searches = ["/fhir/Patient?link=Patient/pb1", "/fhir/Patient?link:missing=false", "/fhir/Patient?_sort=link",
                "/fhir/Patient?_include=Patient:link", "/fhir/Patient?_revinclude=Patient:link",
                "/fhir/Patient?_include=Patient:*", "/fhir/Patient?_revinclude=Patient:*",
                "/fhir/Patient?_has:Patient:link:family=HIDDEN-Habimana",
                "/fhir/Observation?subject:Patient.link=Patient/pb1",
                "/fhir/Patient?_include:iterate=Patient:link&_id=pa1"]
    for path in searches:
        answer = await client.get(path)
        assert answer.status_code == 403, (path, answer.text)
        assert "Patient.link" in answer.json()["issue"][0]["diagnostics"] and "pb1" not in answer.text
        assert (await api.client.get(path)).status_code == 200, path  # no row limit: served
    batch = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?link=Patient/pb1"}}]})
    assert batch.json()["entry"][0]["response"]["status"].startswith("403")
    json_patch = {"Content-Type": "application/json-patch+json"}
    for ops in ([{"op": "test", "path": "/link/0/other/reference", "value": "Patient/pb1"}],
                [{"op": "copy", "from": "/link/0/other/reference", "path": "/name/0/family"}]):
        answer = await client.patch("/fhir/Patient/pa1", json=ops, headers=json_patch)
        assert answer.status_code == 422 and "pb1" not in answer.text, answer.text
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "Patient.link"}]}]}
    assert (await client.patch("/fhir/Patient/pa1", json=fhirpath)).status_code == 200  # selects nothing here
    answer = await client.patch("/fhir/Patient/pa1", json=[{"op": "add", "path": "/gender", "value": "female"}],
                                headers=json_patch)
    assert answer.status_code == 200 and "link" not in answer.json()
    stored = (await api.client.get("/fhir/Patient/pa1")).json()
    assert stored["gender"] == "female" and stored["link"] == [_kept("seealso", "pb1")]


async def test_validate_of_a_change_says_what_the_write_would_about_a_hidden_record(api: ApiHarness) -> None:
    """$validate of a delete or update of a record the policy hides answers as the write would
    (403, outside the policy), not whether that record is a golden one."""
    await seed(api)
    golden = {"resourceType": "Patient", "id": "gold2", "managingOrganization": {"reference": "Organization/hc-b"},
              "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]}}
    with api.store.transaction() as tx:
        tx.update(golden)
    client = policy_client(api, {"organizations": ["Organization/dist-a"]})
    answers = []
    for rid in ("gold2", "pb1"):
        for mode in ("delete", "update"):
            parameter: list[dict[str, Any]] = [{"name": "mode", "valueCode": mode}]
            if mode == "update":
                parameter.append({"name": "resource", "resource": {"resourceType": "Patient", "id": rid}})
            body = {"resourceType": "Parameters", "parameter": parameter}
            answer = await client.post(f"/fhir/Patient/{rid}/$validate", json=body)
            assert answer.status_code == 200, answer.text
            (diagnostics,) = [i["diagnostics"] for i in answer.json()["issue"] if i["severity"] == "error"]
            answers.append(diagnostics.replace(rid, "X"))
            assert "golden" not in answer.text, answer.text
    assert set(answers) == {"Patient/X is outside the client's data policy"}, answers
    # Without a row limit, the golden record is named as the write would.
    answer = await api.with_scopes("system/Patient.rd").post(
        "/fhir/Patient/gold2/$validate", json={"resourceType": "Parameters",
                                               "parameter": [{"name": "mode", "valueCode": "delete"}]})
    assert "golden record" in answer.text


async def test_batch_history_and_everything_show_what_rest_shows(api: ApiHarness) -> None:
    """A Bundle's history and $everything entries: the policy's rows, de-identified for a researcher,
    exactly as the same GETs over REST."""
    await seed(api)
    urls = ["Patient/pa1/_history", "Patient/pb1/_history", "Observation/_history?_count=100", "_history?_count=100",
            "Patient/pa1/$everything", "Patient/pb1/$everything"]
    # What must not show: the hidden Patients' data; for the researcher, identifiers too.
    for policy, scopes, leaks in (({"organizations": ["Organization/dist-a"]}, ("system/*.cruds",), ["HIDDEN"]),
                                  ({"deidentify": True}, ("system/*.rs",), ["HIDDEN", "nid-"])):
        client = policy_client(api, policy, scopes=scopes)
        answer = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": url}} for url in urls]})
        assert answer.status_code == 200 and not [leak for leak in leaks if leak in answer.text], answer.text
        for url, entry in zip(urls, answer.json()["entry"], strict=True):
            rest = await client.get(f"/fhir/{url}")
            assert entry["response"]["status"][:3] == str(rest.status_code), (policy, url, entry["response"])
            if rest.status_code == 200:
                assert refs_in(entry["resource"]) == refs_in(rest.json()), (policy, url)
                same = [{k: v for k, v in e.items() if k != "search"} for e in entry["resource"].get("entry", [])]
                assert same == [{k: v for k, v in e.items() if k != "search"}
                                for e in rest.json().get("entry", [])], (policy, url)
