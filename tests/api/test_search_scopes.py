"""Searches run inside other operations need the scopes of the types they search (issue 11).

Each test seeds p1 (Smith), p2 (Jones, born 1990-01-01), o1 (HIV-POS, about p1) and o2
(HIV-NEG, about p2), then asks as a client whose scopes stop short of what it tries.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from tests.api.test_fhir_api import assert_outcome
from tests.conftest import ApiHarness
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The API on each store backend."""
    return Settings(store_url=store_url, rate_limit=MACHINE_SPEED_LIMITS)


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones"}], "birthDate": "1990-01-01"},
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"coding": [{"code": "HIV-POS"}]},
     "subject": {"reference": "Patient/p1"}},
    {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"coding": [{"code": "HIV-NEG"}]},
     "subject": {"reference": "Patient/p2"}},
]


async def seed(api: ApiHarness) -> None:
    for resource in SEED:
        response = await api.client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def ids(searchset: dict[str, Any]) -> list[str]:
    return sorted(e["resource"]["id"] for e in searchset.get("entry", []) if e["search"]["mode"] == "match")


def forbidden(response: httpx.Response, rtype: str) -> None:
    body = assert_outcome(response, 403, "forbidden")
    assert f"system/{rtype}.s" in body["issue"][0]["diagnostics"]


def batch_status(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["entry"][0]["response"]["status"])


async def test_bundle_if_none_exist_needs_search(api: ApiHarness) -> None:
    await seed(api)
    creator = api.with_scopes("system/Patient.c")
    for condition in ("_id=p2", "family=Jones"):
        entry = {"resource": {"resourceType": "Patient"},
                 "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}}
        assert batch_status(await creator.post("/fhir", json=bundle("batch", entry))) == "403"
        forbidden(await creator.post("/fhir", json=bundle("transaction", entry)), "Patient")
    rest = await creator.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": "_id=p2"})
    forbidden(rest, "Patient")
    entry = {"resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "_id=p2"}}
    allowed = await api.with_scopes("system/Patient.cs").post("/fhir", json=bundle("batch", entry))
    assert batch_status(allowed) == "200 OK"


async def test_has_and_chains_need_search_on_the_other_type(api: ApiHarness) -> None:
    await seed(api)
    patients = api.with_scopes("system/Patient.rs")
    has = {"_has:Observation:subject:code": "HIV-POS"}
    forbidden(await patients.get("/fhir/Patient", params=has), "Observation")
    posted = await patients.post("/fhir/Patient/_search", content=b"_has:Observation:subject:code=HIV-POS",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    forbidden(posted, "Observation")
    get = {"request": {"method": "GET", "url": "Patient?_has:Observation:subject:code=HIV-POS"}}
    assert batch_status(await patients.post("/fhir", json=bundle("batch", get))) == "403"
    observations = api.with_scopes("system/Observation.rs")
    chain = {"subject:Patient.family": "Smith"}
    forbidden(await observations.get("/fhir/Observation", params=chain), "Patient")
    both = api.with_scopes("system/Patient.rs", "system/Observation.rs")
    assert ids((await both.get("/fhir/Patient", params=has)).json()) == ["p1"]
    assert ids((await both.get("/fhir/Observation", params=chain)).json()) == ["o1"]


async def test_includes_of_unreadable_types_are_refused(api: ApiHarness) -> None:
    await seed(api)
    observations = api.with_scopes("system/Observation.rs")
    named = await observations.get("/fhir/Observation", params={"_include": "Observation:subject:Patient"})
    assert_outcome(named, 403, "forbidden")
    patients = api.with_scopes("system/Patient.rs")
    assert_outcome(await patients.get("/fhir/Patient", params={"_revinclude": "Observation:subject"}), 403)
    # An _include that names no type returns the referenced resources the client may read, and no others.
    both = api.with_scopes("system/Patient.rs", "system/Observation.rs")
    observations_only = api.with_scopes("system/Observation.rs", "system/Group.rs")
    for client, expected in ((both, ["Observation", "Observation", "Patient", "Patient"]),
                             (observations_only, ["Observation", "Observation"])):
        found = (await client.get("/fhir/Observation", params={"_include": "Observation:subject"})).json()
        assert sorted(e["resource"]["resourceType"] for e in found["entry"]) == expected
    assert_outcome(await observations.get("/fhir/Observation", params={"_include": "Observation:subject"}), 403)
    revinclude = (await both.get("/fhir/Patient", params={"_revinclude": "Observation:subject"})).json()
    assert len(revinclude["entry"]) == 4


async def test_iterated_includes_need_read_on_every_type_they_return(api: ApiHarness) -> None:
    await seed(api)
    org = {"resourceType": "Organization", "id": "clinic", "name": "Clinic"}
    assert (await api.client.put("/fhir/Organization/clinic", json=org)).status_code == 201
    p1 = {**SEED[0], "managingOrganization": {"reference": "Organization/clinic"}}
    assert (await api.client.put("/fhir/Patient/p1", json=p1)).status_code == 200
    params = {"code": "HIV-POS", "_include": "Observation:subject", "_include:iterate": "Patient:organization"}
    no_orgs = api.with_scopes("system/Patient.rs", "system/Observation.rs")
    refused = await no_orgs.get("/fhir/Observation", params=params)
    assert "Patient:organization" in assert_outcome(refused, 403, "forbidden")["issue"][0]["diagnostics"]
    everything = api.with_scopes("system/Patient.rs", "system/Observation.rs", "system/Organization.r")
    found = (await everything.get("/fhir/Observation", params=params)).json()
    assert sorted((e["resource"]["id"], e["search"]["mode"]) for e in found["entry"]) == [
        ("clinic", "include"), ("o1", "match"), ("p1", "include")]
    assert "_include%3Aiterate=Patient%3Aorganization" in found["link"][0]["url"]
    revinclude = {"_id": "p1", "_revinclude": "Observation:subject", "_revinclude:iterate": "Provenance:target"}
    refused = await everything.get("/fhir/Patient", params=revinclude)
    assert "Provenance" in assert_outcome(refused, 403, "forbidden")["issue"][0]["diagnostics"]


async def test_conditional_references_need_search_on_their_type(api: ApiHarness) -> None:
    await seed(api)
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "probe"}}
    for query in ("family=Jones&birthdate=1990-01-01", "family=Jones&birthdate=1991-01-01"):
        entry = {"resource": {**observation, "subject": {"reference": f"Patient?{query}"}},
                 "request": {"method": "POST", "url": "Observation"}}
        forbidden(await api.with_scopes("system/Observation.c").post("/fhir", json=bundle("transaction", entry)),
                  "Patient")
    entry = {"resource": {**observation, "subject": {"reference": "Patient?family=Jones&birthdate=1990-01-01"}},
             "request": {"method": "POST", "url": "Observation"}}
    allowed = await api.with_scopes("system/Observation.c", "system/Patient.s").post(
        "/fhir", json=bundle("transaction", entry))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["entry"][0]["resource"]["subject"]["reference"] == "Patient/p2"


async def test_bundle_conditional_update_and_delete_need_search(api: ApiHarness) -> None:
    await seed(api)
    put = {"resource": {"resourceType": "Patient", "name": [{"family": "Jones"}], "active": True},
           "request": {"method": "PUT", "url": "Patient?family=Jones"}}
    delete = {"request": {"method": "DELETE", "url": "Patient?family=Jones"}}
    for scopes, entry in (("system/Patient.u", put), ("system/Patient.d", delete)):
        client = api.with_scopes(scopes)
        forbidden(await client.post("/fhir", json=bundle("transaction", entry)), "Patient")
        assert batch_status(await client.post("/fhir", json=bundle("batch", entry))) == "403"
    rest_put = await api.with_scopes("system/Patient.u").put("/fhir/Patient", params={"family": "Jones"},
                                                             json=put["resource"])
    forbidden(rest_put, "Patient")
    forbidden(await api.with_scopes("system/Patient.d").delete("/fhir/Patient", params={"family": "Jones"}), "Patient")
    p2 = (await api.client.get("/fhir/Patient/p2")).json()
    assert p2["meta"]["versionId"] == "1" and "active" not in p2
    allowed = await api.with_scopes("system/Patient.ds").post("/fhir", json=bundle("transaction", delete))
    assert allowed.status_code == 200, allowed.text
    assert (await api.client.get("/fhir/Patient/p2")).status_code == 410


async def test_everything_counts_and_returns_only_readable_types(api: ApiHarness) -> None:
    await seed(api)
    patients = (await api.with_scopes("system/Patient.rs").get("/fhir/Patient/p1/$everything")).json()
    assert patients["total"] == 1
    assert [e["resource"]["resourceType"] for e in patients["entry"]] == ["Patient"]
    both = api.with_scopes("system/Patient.r", "system/Observation.s")
    everything = (await both.get("/fhir/Patient/p1/$everything")).json()
    assert everything["total"] == 2
    assert sorted(e["resource"]["id"] for e in everything["entry"]) == ["o1", "p1"]
