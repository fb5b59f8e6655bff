"""History's ``_at`` over HTTP (http.html#history): the versions current at some point of the period
the value denotes, at instance, type and system level, with ``_since``, pages and ``_summary``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_fhir_api import assert_outcome
from tests.conftest import ApiHarness
from tests.support.write_clock import WriteClock

T1, T2, T3 = "2024-02-01T00:00:00Z", "2024-03-15T10:00:00.500Z", "2024-05-01T00:00:00Z"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> WriteClock:
    """The instant the store stamps on what the API writes."""
    return WriteClock(monkeypatch)


async def _put(c: httpx.AsyncClient, clock: WriteClock, when: str, resource: dict[str, Any]) -> None:
    clock.set(when)
    assert (await c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)).is_success


async def _delete(c: httpx.AsyncClient, clock: WriteClock, when: str, ref: str) -> None:
    clock.set(when)
    assert (await c.delete(f"/fhir/{ref}")).is_success


async def _three_versions(c: httpx.AsyncClient, clock: WriteClock, rid: str = "a1") -> None:
    for n, when in enumerate((T1, T2, T3)):
        await _put(c, clock, when, {"resourceType": "Patient", "id": rid, "name": [{"family": f"V{n + 1}"}]})


async def _versions(c: httpx.AsyncClient, path: str, **params: str | list[str]) -> list[str]:
    """``id/versionId`` (``id/deleted`` for a tombstone) of the entries, newest first; total agrees."""
    response = await c.get(path, params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = [f"{e['resource']['id']}/{e['resource']['meta']['versionId']}" if "resource" in e
             else e["fullUrl"].rsplit("/", 1)[1] + "/deleted" for e in bundle.get("entry", [])]
    assert bundle["type"] == "history" and bundle["total"] == len(found)
    return found


async def test_at_on_an_instance_gives_the_versions_current_then(api: ApiHarness, clock: WriteClock) -> None:
    c = api.client
    await _three_versions(c, clock)
    path = "/fhir/Patient/a1/_history"
    assert await _versions(c, path, _at="2024-03-01") == ["a1/1"]  # between t1 and t2
    assert await _versions(c, path, _at="2024-03") == ["a1/2", "a1/1"]  # a month covering t2
    assert await _versions(c, path, _at="2024-06-01") == ["a1/3"]  # after t3
    assert await _versions(c, path, _at="2024-03-15T10:00:00.499Z") == ["a1/1"]
    assert await _versions(c, path, _at="2024-03-15T11:00:00.500+01:00") == ["a1/2"]
    assert await _versions(c, path, _at=["2024-02-10", "2024-06-01"]) == ["a1/3", "a1/1"]  # any of them
    assert await _versions(c, path, _at=["", "2024-06"]) == ["a1/3"]  # an empty value is no value
    # Nothing current then: an empty history of a resource that exists; one never written is 404.
    assert await _versions(c, path, _at="2023") == []
    assert_outcome(await c.get("/fhir/Patient/nobody/_history", params={"_at": "2024"}), 404)
    # With _since: of those, the versions last updated since then.
    assert await _versions(c, path, _at="2024-03", _since="2024-03-01") == ["a1/2"]
    assert await _versions(c, path, _at="2024-03-10", _since="2024-03-01") == []
    counted = (await c.get(path, params={"_at": "2024-03", "_summary": "count"})).json()
    assert counted["total"] == 2 and "entry" not in counted


async def test_at_after_a_delete_gives_the_delete(api: ApiHarness, clock: WriteClock) -> None:
    c = api.client
    await _put(c, clock, T1, {"resourceType": "Patient", "id": "d1", "active": True})
    await _delete(c, clock, "2024-03-01T00:00:00Z", "Patient/d1")
    path = "/fhir/Patient/d1/_history"
    assert await _versions(c, path, _at="2024-04") == ["d1/deleted"]
    entry = (await c.get(path, params={"_at": "2024-04"})).json()["entry"][0]
    assert entry["request"] == {"method": "DELETE", "url": "Patient/d1"}
    assert entry["response"]["status"] == "410 Gone" and entry["response"]["etag"] == 'W/"2"'
    assert await _versions(c, path, _at="2024-02") == ["d1/1"]
    assert await _versions(c, path, _at="2024") == ["d1/deleted", "d1/1"]
    await _put(c, clock, "2024-04-01T00:00:00Z", {"resourceType": "Patient", "id": "d1"})
    assert await _versions(c, path, _at="2024-03-20") == ["d1/deleted"]
    assert await _versions(c, path, _at="2024-04-20") == ["d1/3"]


async def test_at_on_types_and_the_system_with_pages(api: ApiHarness, clock: WriteClock) -> None:
    c = api.client
    await _three_versions(c, clock, "a1")
    await _put(c, clock, "2024-03-02T00:00:00Z", {"resourceType": "Patient", "id": "b1"})
    await _put(c, clock, "2024-03-03T00:00:00Z", {"resourceType": "Observation", "id": "o1", "status": "final",
                                                  "code": {"text": "weight"}})
    await _put(c, clock, "2024-04-20T00:00:00Z", {"resourceType": "Patient", "id": "b1", "active": True})
    assert await _versions(c, "/fhir/Patient/_history", _at="2024-03-10") == ["b1/1", "a1/1"]
    assert await _versions(c, "/fhir/Patient/_history", _at="2024-04-25") == ["b1/2", "a1/2"]
    assert await _versions(c, "/fhir/Observation/_history", _at="2024-03-02") == []
    # The system's: every type's (each write made a Provenance too, leave them out here).
    system = await _versions(c, "/fhir/_history", _at="2024-03-10")
    assert [v for v in system if v.split("/")[0] in ("a1", "b1", "o1")] == ["o1/1", "b1/1", "a1/1"]
    # Pages: the next link carries _at, and versions written between pages move nothing, even
    # those that end the lifetime of a version the pages show (b1's, in August's pages).
    assert await _follow(c, clock, "2024-03", [f"2024-06-0{n}T00:00:00Z" for n in range(1, 9)]) == [
        "a1/2", "b1/1", "a1/1"]
    assert await _follow(c, clock, "2024-08", [f"2024-07-1{n}T00:00:00Z" for n in range(1, 9)]) == [
        "b1/5", "a1/3"]
    since = (await c.get("/fhir/_history", params={"_at": "2024-03", "_since": "2024-03-02", "_count": "1"})).json()
    (following,) = [link["url"] for link in since["link"] if link["relation"] == "next"]
    assert "_at=2024-03" in following and "_since=2024-03-02" in following


async def _follow(c: httpx.AsyncClient, clock: WriteClock, at: str, stamps: list[str]) -> list[str]:
    """The entries of the pages of Patient history ``_at``, one a page, followed by their next
    links, with a write to b1 at the next of ``stamps`` after each page; as one page had them."""
    whole = await _versions(c, "/fhir/Patient/_history", _at=at)
    seen: list[str] = []
    page = (await c.get("/fhir/Patient/_history", params={"_at": at, "_count": "1"})).json()
    while True:
        assert page["total"] == len(whole)
        seen += [f"{e['resource']['id']}/{e['resource']['meta']['versionId']}" for e in page["entry"]]
        await _put(c, clock, stamps.pop(0), {"resourceType": "Patient", "id": "b1", "gender": "other",
                                             "birthDate": f"2000-01-{len(stamps):02}"})
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        assert f"_at={at}" in following[0] and "_snapshot=" in following[0]
        page = (await c.get(following[0].removeprefix("http://gateway.test"))).json()
    assert seen == whole
    return seen


@pytest.mark.parametrize("path", ["/fhir/Patient/a1/_history", "/fhir/Patient/_history", "/fhir/_history"])
async def test_bad_at_values_are_refused_naming_at(api: ApiHarness, path: str) -> None:
    c = api.client
    assert (await c.put("/fhir/Patient/a1", json={"resourceType": "Patient", "id": "a1"})).status_code == 201
    for bad in ("ge2024-01-01", "lt2024", "yesterday", "2024-02-30", "2024-13", "2024-03-01T25:00:00Z"):
        body = assert_outcome(await c.get(path, params={"_at": bad}), 400, "invalid")
        assert body["issue"][0]["expression"] == ["_at"] and "_at" in body["issue"][0]["diagnostics"]
    comparator = assert_outcome(await c.get(path, params={"_at": "ge2024-01-01"}), 400)
    assert "comparator" in comparator["issue"][0]["diagnostics"]
    many = assert_outcome(await c.get(path, params={"_at": [f"2024-01-{d:02}" for d in range(1, 12)]}), 400)
    assert many["issue"][0]["expression"] == ["_at"]
    assert_outcome(await c.get(path, params={"_list": "l1"}), 400, "not-supported")
    # Under strict handling _at is a history parameter like the others.
    strict = await c.get(path, params={"_at": "2026"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 200
