"""fhir.md §6 check 51: ifNoneExist, conditional references and processing order inside transactions.

Run against SQLite and PostgreSQL. Every response passes the response oracles.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.robustness.http import Gateway, history_total


@pytest.fixture(scope="module")
def fhir(any_gateway: Gateway) -> Iterator[httpx.Client]:
    """A checked client for the gateway on each backend."""
    with any_gateway.client() as client:
        yield client


@pytest.fixture
def system() -> str:
    """An identifier system of this test's own."""
    return f"urn:test:trules:{uuid.uuid4().hex}"


def _patient(system: str, value: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], **fields}


def _observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "trules"},
        "subject": {"reference": subject},
    }


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(
    resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


def _ids(fhir: httpx.Client, system: str, value: str = "") -> set[str]:
    bundle = fhir.get("/Patient", params={"identifier": f"{system}|{value}", "_count": "100"}).json()
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def _id_of(entry: dict[str, Any]) -> str:
    location: str = entry["response"]["location"]
    return location.split("/")[1]


def _create(fhir: httpx.Client, resource: dict[str, Any]) -> str:
    response = fhir.post(
        f"/{resource['resourceType']}", json=resource, headers={"Prefer": "return=representation"}
    )
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


# -- ifNoneExist ---------------------------------------------------------------------------


def test_51_if_none_exist_creates_once_then_finds_the_existing_resource(
    fhir: httpx.Client, system: str
) -> None:
    bundle = _transaction(_post(_patient(system, "v"), if_none_exist=f"identifier={system}|v"))
    first = fhir.post("", json=bundle)
    assert first.status_code == 200, first.text
    entry = first.json()["entry"][0]
    assert entry["response"]["status"].startswith("201")
    again = fhir.post("", json=bundle)
    assert again.status_code == 200, again.text
    repeated = again.json()["entry"][0]
    assert repeated["response"]["status"].startswith("200")
    assert _id_of(repeated) == _id_of(entry)
    assert _ids(fhir, system, "v") == {_id_of(entry)}


def test_51_a_matched_if_none_exist_entry_is_the_target_of_its_full_url(
    fhir: httpx.Client, system: str
) -> None:
    existing = _create(fhir, _patient(system, "v"))
    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = _transaction(
        _post(_observation(urn)),  # listed first: references resolve regardless of order
        _post(_patient(system, "v"), full_url=urn, if_none_exist=f"identifier={system}|v"),
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    observation_entry, patient_entry = response.json()["entry"]
    assert _id_of(patient_entry) == existing and patient_entry["response"]["status"].startswith("200")
    observation = fhir.get(f"/Observation/{_id_of(observation_entry)}").json()
    assert observation["subject"]["reference"] == f"Patient/{existing}"
    assert _ids(fhir, system) == {existing}


def test_51_two_creates_with_one_if_none_exist_make_one_resource(fhir: httpx.Client, system: str) -> None:
    # Both searched the store, which did not hold the first yet: two Patients of one identifier.
    first, second = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    condition = f"identifier={system}|twice"
    bundle = _transaction(
        _post(_patient(system, "twice"), full_url=first, if_none_exist=condition),
        _post(_observation(second)),
        _post(_patient(system, "twice", gender="female"), full_url=second, if_none_exist=condition),
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    created, observation, matched = response.json()["entry"]
    assert created["response"]["status"].startswith("201") and matched["response"]["status"].startswith("200")
    assert _id_of(created) == _id_of(matched)
    assert _ids(fhir, system, "twice") == {_id_of(created)}
    assert fhir.get(f"/Observation/{_id_of(observation)}").json()["subject"]["reference"] == (
        f"Patient/{_id_of(created)}"
    )


def test_51_if_none_exist_matching_several_fails_the_transaction(fhir: httpx.Client, system: str) -> None:
    _create(fhir, _patient(system, "dup"))
    _create(fhir, _patient(system, "dup"))
    before = history_total(fhir)
    bundle = _transaction(
        _post(_patient(system, "other")),
        _post(_patient(system, "dup"), if_none_exist=f"identifier={system}|dup"),
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 412
    assert history_total(fhir) == before


# -- conditional references ----------------------------------------------------------------


def test_51_conditional_reference_resolves_to_the_existing_resource(fhir: httpx.Client, system: str) -> None:
    existing = _create(fhir, _patient(system, "v"))
    response = fhir.post("", json=_transaction(_post(_observation(f"Patient?identifier={system}|v"))))
    assert response.status_code == 200, response.text
    observation = fhir.get(f"/Observation/{_id_of(response.json()['entry'][0])}").json()
    assert observation["subject"]["reference"] == f"Patient/{existing}"


@pytest.mark.parametrize("matches", [0, 2])
def test_51_a_conditional_reference_must_match_exactly_one(
    fhir: httpx.Client, system: str, matches: int
) -> None:
    for _ in range(matches):
        _create(fhir, _patient(system, "v"))
    before = history_total(fhir)
    bundle = _transaction(
        _post(_patient(system, "new")), _post(_observation(f"Patient?identifier={system}|v"))
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == (404 if matches == 0 else 412)
    assert history_total(fhir) == before


def test_51_a_conditional_reference_finds_what_the_transaction_creates_with_the_same_condition(
    fhir: httpx.Client, system: str
) -> None:
    """A client that does not know whether the Patient exists sends it with ``ifNoneExist`` and
    points the Observation at the same search: whether the Patient existed or is created here, the
    Observation's subject is that Patient (not a 404 because the store held none before)."""
    query = f"identifier={system}|both"
    for round_ in ("created", "matched"):
        bundle = _transaction(
            _post(_observation(f"Patient?{query}")),
            _post(_patient(system, "both"), if_none_exist=query),
        )
        response = fhir.post("", json=bundle)
        assert response.status_code == 200, (round_, response.text)
        observation, patient = response.json()["entry"]
        assert patient["response"]["status"].startswith("201" if round_ == "created" else "200")
        stored = fhir.get(f"/Observation/{_id_of(observation)}").json()
        assert stored["subject"]["reference"] == f"Patient/{_id_of(patient)}"
        assert _ids(fhir, system, "both") == {_id_of(patient)}


def test_51_an_unresolved_conditional_reference_is_named_where_it_is(fhir: httpx.Client, system: str) -> None:
    observation = _observation("Patient/unused")
    observation["performer"] = [{"display": "x"}, {"reference": f"Patient?identifier={system}|nobody"}]
    response = fhir.post("", json=_transaction(_post(_patient(system, "p")), _post(observation)))
    assert response.status_code == 404, response.text
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.performer[1]"]


# -- processing order ----------------------------------------------------------------------


def test_51_entries_run_delete_post_put_get_and_answer_in_request_order(
    fhir: httpx.Client, system: str
) -> None:
    doomed = _create(fhir, _patient(system, "order"))
    put_id = f"trules-{uuid.uuid4().hex[:12]}"
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient?identifier={system}|order"}},
        {"request": {"method": "GET", "url": f"Patient/{doomed}"}},
        {
            "resource": _patient(system, "order", id=put_id),
            "request": {"method": "PUT", "url": f"Patient/{put_id}"},
        },
        _post(_patient(system, "order")),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed}"}},
    )
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    search, read, put, post, delete = response.json()["entry"]
    # Answers come in request order, whatever order the entries ran in.
    assert put["response"]["status"].startswith("201") and _id_of(put) == put_id
    assert post["response"]["status"].startswith("201")
    assert delete["response"]["status"].startswith("204") or delete["response"]["status"].startswith("200")
    # The GETs ran last: the search sees the POST and the PUT but not the deleted patient,
    # and the read of the deleted patient says it is gone.
    found = {e["resource"]["id"] for e in search["resource"].get("entry", [])}
    assert found == {put_id, _id_of(post)}
    assert read["response"]["status"].startswith("410")


def test_51_a_resource_deleted_and_written_in_one_transaction_is_refused(
    fhir: httpx.Client, system: str
) -> None:
    target = f"trules-{uuid.uuid4().hex[:12]}"
    assert fhir.put(f"/Patient/{target}", json=_patient(system, "x", id=target)).status_code == 201
    before = history_total(fhir)
    bundle = _transaction(
        {
            "resource": _patient(system, "y", id=target),
            "request": {"method": "PUT", "url": f"Patient/{target}"},
        },
        {"request": {"method": "DELETE", "url": f"Patient/{target}"}},
    )
    response = fhir.post("", json=bundle)
    assert 400 <= response.status_code < 500  # identities overlap (http.html#trules)
    assert history_total(fhir) == before


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH"])
def test_a_write_entry_naming_a_version_is_refused_not_applied_to_the_current_one(
    fhir: httpx.Client, system: str, kind: str, method: str
) -> None:
    # DELETE Patient/x/_history/1 deleted Patient/x whatever its current version (REST answers a
    # write to a version URL with 405); If-Match is how a write is made conditional on a version.
    rid = f"v-{uuid.uuid4().hex[:12]}"
    assert fhir.put(f"/Patient/{rid}", json={**_patient(system, "v"), "id": rid}).status_code == 201
    assert fhir.put(f"/Patient/{rid}", json={**_patient(system, "v"), "id": rid, "active": True}).status_code == 200
    entry: dict[str, Any] = {"request": {"method": method, "url": f"Patient/{rid}/_history/1"}}
    if method == "PUT":
        entry["resource"] = {**_patient(system, "v"), "id": rid}
    if method == "PATCH":
        entry["resource"] = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                             "data": "W3sib3AiOiAicmVtb3ZlIiwgInBhdGgiOiAiL2FjdGl2ZSJ9XQ=="}  # remove /active
    response = fhir.post("", json={"resourceType": "Bundle", "type": kind, "entry": [entry]})
    if kind == "batch":
        assert response.status_code == 200
        answer = response.json()["entry"][0]["response"]
        assert answer["status"].startswith("400"), answer
        issue = answer["outcome"]["issue"][0]
    else:
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported" and issue["expression"] == ["Bundle.entry[0].request.url"], issue
    current = fhir.get(f"/Patient/{rid}")
    assert current.status_code == 200 and current.json()["meta"]["versionId"] == "2"
    assert current.json()["active"] is True
