"""fhir.md §6 check 47: new matching resources created while a client pages cause no duplicates and no 5xx.

The client follows ``next`` links verbatim (as every FHIR client does) while, between its
page requests, other requests create resources that match its search and sort into the
pages it has already read. Every id must come back exactly once, the original matches
must all come back, ``total`` must not move, and no request may fail. Then the same with
a writer thread creating resources concurrently. Both run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.robustness.http import Gateway, local

ORIGINALS = 23
PAGE = 5
SORTS = [
    None,
    "-birthdate",
    "birthdate",
    "family,-birthdate",
    "_lastUpdated",
    "-_lastUpdated",
    "-_id",
    "gender",
]


@pytest.fixture(scope="module")
def fhir(any_gateway: Gateway) -> Iterator[httpx.Client]:
    """A checked client for the gateway on each backend."""
    with any_gateway.client() as client:
        yield client


def _patient(system: str, n: int, birth: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": str(n)}],
        "name": [{"family": f"Paging{n:03d}"}],
        "gender": ["female", "male", "other"][n % 3],
        "birthDate": birth,
    }


def _load(fhir: httpx.Client, system: str) -> set[str]:
    """Create the original matches in one transaction; return their ids."""
    entries = [
        {"resource": _patient(system, n, f"19{50 + n}-0{1 + n % 9}-1{n % 10}"),
         "request": {"method": "POST", "url": "Patient"}}
        for n in range(ORIGINALS)
    ]  # fmt: skip
    response = fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    return {e["response"]["location"].split("/")[1] for e in response.json()["entry"]}


def _page_through(
    fhir: httpx.Client, system: str, sort: str | None, between_pages: Callable[[int], None]
) -> tuple[list[str], set[int]]:
    """Follow ``next`` from the first page to the last; return ids in order and the totals seen."""
    params = {"identifier": f"{system}|", "_count": str(PAGE)}
    if sort:
        params["_sort"] = sort
    response = fhir.get("/Patient", params=params)
    ids: list[str] = []
    totals: set[int] = set()
    page = 0
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        totals.add(bundle["total"])
        ids += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if next_url is None:
            return ids, totals
        page += 1
        assert page <= min(totals) // PAGE + 1, "paging goes on past the total"
        between_pages(page)
        response = fhir.get(local(next_url))


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: s or "default")
def test_47_creates_between_pages_cause_no_duplicates(fhir: httpx.Client, sort: str | None) -> None:
    system = f"urn:test:paging:{uuid.uuid4().hex}"
    originals = _load(fhir, system)

    def create_matches(page: int) -> None:
        # Births before, between and after the originals: new rows land on pages already read.
        for n, birth in enumerate(("1900-01-01", "1960-06-15", "2020-12-31")):
            response = fhir.post("/Patient", json=_patient(system, 100 + 10 * page + n, birth))
            assert response.status_code == 201, response.text

    ids, totals = _page_through(fhir, system, sort, create_matches)
    assert len(ids) == len(set(ids)), f"duplicates: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    assert originals <= set(ids), "a resource that matched from the start was skipped"
    assert totals == {ORIGINALS}, f"total changed while paging: {totals}"


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: s or "default")
def test_47_deletes_and_edits_between_pages_skip_nothing(fhir: httpx.Client, sort: str | None) -> None:
    """Resources already read that are deleted, or edited out of the results, between two pages
    must not move the later matches (search.html#paging: a server SHOULD give a consistent
    set when the client follows ``next``; a position-based page skipped one match each time)."""
    system = f"urn:test:paging:{uuid.uuid4().hex}"
    originals = _load(fhir, system)
    read: list[str] = []
    gone: set[str] = set()

    def drop_what_was_read(page: int) -> None:
        # The ids read so far (the last page's included) are those this callback may remove.
        candidates = [i for i in read if i not in gone]
        victim = candidates[0]
        if page % 2:
            response = fhir.delete(f"/Patient/{victim}")
            assert response.status_code in (200, 204), response.text
        else:  # edited so it no longer matches the search
            current = fhir.get(f"/Patient/{victim}").json()
            current["identifier"] = [{"system": "urn:test:paging:elsewhere", "value": victim}]
            response = fhir.put(f"/Patient/{victim}", json=current)
            assert response.status_code == 200, response.text
        gone.add(victim)

    params = {"identifier": f"{system}|", "_count": str(PAGE)}
    if sort:
        params["_sort"] = sort
    response = fhir.get("/Patient", params=params)
    page = 0
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        read += [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if next_url is None:
            break
        page += 1
        assert page <= ORIGINALS, "paging goes on without end"
        drop_what_was_read(page)
        response = fhir.get(local(next_url))
    assert len(read) == len(set(read)), f"duplicates: {sorted(i for i in set(read) if read.count(i) > 1)}"
    assert gone, "nothing was removed between pages: the test tests nothing"
    assert originals - set(read) == set(), "a match that was never removed was skipped"


def test_47_everything_pages_skip_nothing_when_read_resources_are_deleted(fhir: httpx.Client) -> None:
    """``Patient/$everything`` pages as a search does: a resource read already that is deleted before
    the next page must not make the client miss a later one."""
    patient = fhir.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    entries = [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": str(n)},
                      "subject": {"reference": f"Patient/{patient}"}},
         "request": {"method": "POST", "url": "Observation"}}
        for n in range(11)
    ]  # fmt: skip
    response = fhir.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    expected = {patient, *(e["response"]["location"].split("/")[1] for e in response.json()["entry"])}
    read: list[str] = []
    response = fhir.get(f"/Patient/{patient}/$everything", params={"_count": "3"})
    for _ in range(20):
        assert response.status_code == 200, response.text
        bundle = response.json()
        read += [e["resource"]["id"] for e in bundle.get("entry", [])]
        next_url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if next_url is None:
            break
        victim = next(i for i in reversed(read) if i != patient)
        assert fhir.delete(f"/Observation/{victim}").status_code in (200, 204)
        response = fhir.get(local(next_url))
    assert len(read) == len(set(read)), "a resource came twice"
    assert expected - set(read) == set(), "a resource that was never deleted was skipped"
    for forged in ("nonsense!", "WyJOb1N1Y2hUeXBlIiwieCJd"):  # the second: ["NoSuchType","x"]
        refused = fhir.get(f"/Patient/{patient}/$everything", params={"_cursor": forged})
        assert refused.status_code == 400, refused.text


def test_47_a_concurrent_writer_causes_no_duplicates_or_errors(
    fhir: httpx.Client, any_gateway: Gateway
) -> None:
    system = f"urn:test:paging:{uuid.uuid4().hex}"
    originals = _load(fhir, system)
    stop = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        with any_gateway.client(checked=False) as client:
            for n in range(200):  # bounded even if the reader is slow
                if stop.is_set():
                    return
                response = client.post("/Patient", json=_patient(system, 1000 + n, f"19{60 + n % 40}-01-01"))
                if response.status_code != 201:
                    failures.append(f"{response.status_code}: {response.text[:200]}")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for sort in SORTS:
            ids, totals = _page_through(fhir, system, sort, lambda page: None)
            assert len(ids) == len(set(ids)), f"duplicates with _sort={sort}"
            assert originals <= set(ids), f"originals skipped with _sort={sort}"
            assert len(totals) == 1, f"total changed while paging with _sort={sort}: {totals}"
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not failures, failures[:3]
