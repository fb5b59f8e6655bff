"""Search size limits (settings ``search.max_*``): a search past one is a 400 naming the parameter, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from gateway.api.app import create_app
from gateway.settings import SearchSettings, Settings
from gateway.store import Store
from tests.conftest import ApiHarness


@pytest.fixture
def search_settings() -> SearchSettings:
    """The search section of the app under test (the defaults unless a test overrides it)."""
    return SearchSettings()


@pytest.fixture
async def api_on(store_url: str, store: Store, search_settings: SearchSettings) -> AsyncIterator[ApiHarness]:
    """The app in-process on each store backend."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"], search=search_settings)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()


async def post_search(client: httpx.AsyncClient, rtype: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """``POST [type]/_search`` with a form body (repeated names allowed)."""
    return await client.post(f"/fhir/{rtype}/_search", content=urlencode(pairs),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})


def refused(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text[:500]
    issue: dict[str, Any] = response.json()["issue"][0]
    assert issue["code"] == "too-costly" and issue["expression"] == [param], issue
    return issue


async def test_oversized_searches_are_400s_naming_the_parameter(api_on: ApiHarness) -> None:
    client = api_on.client
    # SQLite: "Expression tree is too large" / "too many terms in compound SELECT";
    # PostgreSQL: the bind-parameter limit and the stack depth.
    names = ",".join(f"n{i}" for i in range(1000))
    refused(await client.get("/fhir/Patient", params={"name": names}), "name")
    refused(await client.get("/fhir/Patient", params=[("name", f"n{i}") for i in range(501)]), "name")
    ids = ",".join(f"id{i}" for i in range(70_000))
    refused(await post_search(client, "Patient", [("_id", ids)]), "_id")
    refused(await post_search(client, "Patient", [("gender", "male")] * 5000), "gender")
    refused(await client.get("/fhir/Patient", params={"_sort": ",".join(["birthdate"] * 101)}), "_sort")
    refused(await client.get("/fhir/Patient", params={"_lastUpdated": ",".join(["ge2020"] * 101)}), "_lastUpdated")
    refused(await client.get("/fhir/Observation", params={"subject:Patient.name": names}), "name")
    revincludes = [("_revinclude", f"Observation:{param}") for param in
                   ("subject", "patient", "performer", "focus", "has-member", "derived-from", "specimen",
                    "device", "encounter", "based-on", "part-of")]
    refused(await client.get("/fhir/Patient", params=urlencode(revincludes)), "_revinclude")


async def test_repeated_includes_run_once(api_on: ApiHarness) -> None:
    client = api_on.client
    patient = (await client.post("/fhir/Patient", json={"resourceType": "Patient"})).json()
    for _ in range(3):
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": f"Patient/{patient['id']}"}}
        assert (await client.post("/fhir/Observation", json=observation)).status_code == 201
    params = [("_count", "1000")] + [("_revinclude", "Observation:subject")] * 150
    params += [("_include", "Patient:general-practitioner")] * 150
    bundle = await client.get("/fhir/Patient", params=urlencode(params))
    assert bundle.status_code == 200, bundle.text[:500]
    modes = [entry["search"]["mode"] for entry in bundle.json()["entry"]]
    assert modes.count("match") == 1 and modes.count("include") == 3
    self_link = next(link["url"] for link in bundle.json()["link"] if link["relation"] == "self")
    assert self_link.count("_revinclude") == 1 and self_link.count("_include") == 1


@pytest.mark.parametrize("search_settings", [SearchSettings(max_included=2)])
async def test_a_page_including_too_many_resources_is_refused(api_on: ApiHarness) -> None:
    client = api_on.client
    patient = (await client.post("/fhir/Patient", json={"resourceType": "Patient"})).json()
    references = []
    for _ in range(3):
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": f"Patient/{patient['id']}"}}
        references.append((await client.post("/fhir/Observation", json=observation)).json()["id"])
    refused(await client.get("/fhir/Patient", params={"_revinclude": "Observation:subject"}), "_revinclude")
    assert (await client.get("/fhir/Observation", params={"_include": "Observation:subject"})).status_code == 200
    members = [(await client.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"] for _ in range(3)]
    # R4 lets Group.member.entity name a Patient (among others), never an Observation.
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{rid}"}} for rid in members]}
    assert (await client.post("/fhir/Group", json=group)).status_code == 201
    refused(await client.get("/fhir/Group", params={"_include": "Group:member"}), "_include")


@pytest.mark.parametrize("search_settings", [SearchSettings(max_values=200, max_criteria=50, max_includes=50)])
async def test_the_largest_searches_the_settings_allow_run(api_on: ApiHarness) -> None:
    client = api_on.client
    names = ",".join(f"n{i}" for i in range(200))
    ids = ",".join(f"id{i}" for i in range(200))
    dates = ",".join(["ge1900"] * 200)
    for pairs in ([("name", names)], [("name", "n")] * 50, [("birthdate", dates)] * 2, [("_lastUpdated", dates)],
                  [("_id", ids)] * 50, [("name", names), ("birthdate", dates), ("gender:not", ids)]):
        response = await post_search(client, "Patient", pairs)
        assert response.status_code == 200, response.text[:500]
    refused(await post_search(client, "Patient", [("_lastUpdated", dates), ("_lastUpdated", "ge1900")]),
            "_lastUpdated")


@pytest.mark.parametrize("search_settings", [SearchSettings(max_bundle_resources=10)])
async def test_a_bundles_reads_return_at_most_max_bundle_resources_together(api_on: ApiHarness) -> None:
    """One batch of searches is one request: without a bound on what its GET entries return together,
    a few MB of ``Patient?_count=1000`` entries made a response (and a process) hundreds of times larger."""
    client = api_on.client
    for _ in range(4):
        assert (await client.post("/fhir/Patient", json={"resourceType": "Patient"})).status_code == 201
    search = {"request": {"method": "GET", "url": "Patient?_count=1000"}}
    batch = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [search] * 5})
    assert batch.status_code == 200
    answers = batch.json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["200", "200", "400", "400", "400"]
    issue = answers[2]["response"]["outcome"]["issue"][0]
    assert issue["code"] == "too-costly" and "10" in issue["diagnostics"], issue
    # Every GET entry counts at least once, so entries that find nothing cannot run without end.
    nothing = {"request": {"method": "GET", "url": "Patient?_id=none"}}
    many = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [nothing] * 12})
    assert [a["response"]["status"][:3] for a in many.json()["entry"]] == ["200"] * 10 + ["400"] * 2
    transaction = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                   "entry": [search] * 3})
    refused_whole = transaction.json()["issue"][0]
    assert transaction.status_code == 400 and refused_whole["code"] == "too-costly", transaction.text
    # Within the bound, as before.
    fits = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [search] * 2})
    assert fits.status_code == 200 and all(a["response"]["status"] == "200 OK" for a in fits.json()["entry"])


async def test_sort_keys_past_max_sort_keys_are_refused_and_repeats_collapse(api_on: ApiHarness) -> None:
    """Each ``_sort`` key is one more index probe per match before a page is cut: 68 keys sorted
    46,000 Observations in 4.5 s (SQLite) and 8.4 s (PostgreSQL). A repeated key (same parameter,
    same direction) never changes the order, so it is dropped rather than counted."""
    client = api_on.client
    for n in range(3):
        body = {"resourceType": "Patient", "gender": "male" if n else "female", "birthDate": f"200{n}-01-01"}
        assert (await client.post("/fhir/Patient", json=body)).status_code == 201
    limit = SearchSettings().max_sort_keys
    keys = ["birthdate", "-gender", "name", "family", "given", "identifier", "organization", "_id"]
    issue = refused(await client.get("/fhir/Patient", params={"_sort": ",".join(keys[: limit + 1])}), "_sort")
    assert str(limit) in issue["diagnostics"]
    repeated = ",".join(["-gender", "birthdate"] * 50)
    response = await client.get("/fhir/Patient", params={"_sort": repeated})
    assert response.status_code == 200, response.text[:500]
    assert [e["resource"]["birthDate"] for e in response.json()["entry"]] == ["2001-01-01", "2002-01-01", "2000-01-01"]
    self_link = next(link["url"] for link in response.json()["link"] if link["relation"] == "self")
    assert "_sort=-gender%2Cbirthdate&" in self_link or "_sort=-gender,birthdate&" in self_link, self_link
    assert (await client.get("/fhir/Patient", params={"_sort": ",".join(keys[:limit])})).status_code == 200
