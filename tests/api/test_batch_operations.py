"""A batch or transaction Bundle's GET entries for history, Patient/$everything and metadata.

Clients send them in batches (``GET Patient/123/_history``, ``GET _history``, ``GET metadata``…);
each entry answers as the same GET over REST does: the same Bundle in ``entry.resource``, the
same error as the entry's outcome (in a transaction, the whole transaction's), and the same
scopes and data policy deciding what the client gets.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ApiHarness

BASE = "http://gateway.test/fhir"


def _bundle(*urls: str, kind: str = "batch", method: str = "GET") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"request": {"method": method, "url": url}} for url in urls]}  # fmt: skip


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A response body without what differs between two answers of the same content (its id and
    the instant it was assembled)."""
    out = {k: v for k, v in body.items() if k != "id"}
    meta = {k: v for k, v in body.get("meta", {}).items() if k != "lastUpdated"}
    out.pop("meta", None)
    if meta:
        out["meta"] = meta
    return out


def _refs(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if "resource" in e}  # fmt: skip


async def _seed(api: ApiHarness) -> tuple[str, str]:
    """A Patient written twice and an Observation about them: (patient id, observation id)."""
    writer = api.client
    created = await writer.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    updated = await writer.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "other"})
    assert updated.status_code == 200, updated.text
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                   "subject": {"reference": f"Patient/{pid}"}}  # fmt: skip
    made = await writer.post("/fhir/Observation", json=observation)
    assert made.status_code == 201, made.text
    return pid, made.json()["id"]


async def _same_as_rest(client: httpx.AsyncClient, urls: list[str], kind: str) -> list[dict[str, Any]]:
    """Run ``urls`` as GET entries of a ``kind`` Bundle; each must answer 200 with what REST answers."""
    response = await client.post("/fhir", json=_bundle(*urls, kind=kind))
    assert response.status_code == 200, response.text[:800]
    answers: list[dict[str, Any]] = response.json()["entry"]
    assert len(answers) == len(urls)
    for url, answer in zip(urls, answers, strict=True):
        assert answer["response"]["status"] == "200 OK", (url, answer)
        rest = await client.get(f"{BASE}/{url.removeprefix(BASE + '/')}")
        assert rest.status_code == 200, (url, rest.text[:500])
        assert _comparable(answer["resource"]) == _comparable(rest.json()), url
    return answers


async def test_history_everything_and_metadata_entries_answer_as_over_rest(api_on: ApiHarness) -> None:
    pid, oid = await _seed(api_on)
    urls = [
        f"Patient/{pid}/_history",
        f"Patient/{pid}/_history?_since=2000-01-01&_summary=true",
        "Patient/_history?_count=1",
        "Patient/_history?_count=1&_offset=1",
        "_history",
        "_history?_count=2&_elements=status",
        f"{BASE}/Observation/{oid}/_history",
        f"Patient/{pid}/$everything",
        f"Patient/{pid}/$everything?_count=1&_type=Observation,Patient",
        "metadata",
        "metadata?mode=full",
        f"Patient/{pid}/_history?_at=2020&_at=2099",
    ]
    for kind in ("batch", "transaction"):
        answers = await _same_as_rest(api_on.client, urls, kind)
        assert [e["resource"]["meta"]["versionId"] for e in answers[0]["resource"]["entry"]] == ["2", "1"]
        assert answers[2]["resource"]["total"] == 2 and len(answers[2]["resource"]["entry"]) == 1
        assert "next" in {link["relation"] for link in answers[2]["resource"]["link"]}
        assert answers[4]["resource"]["type"] == "history"  # the writes' Provenance too
        assert {f"Patient/{pid}", f"Observation/{oid}"} <= _refs(answers[4]["resource"])
        assert {f"Patient/{pid}", f"Observation/{oid}"} <= _refs(answers[7]["resource"])
        assert answers[9]["resource"]["resourceType"] == "CapabilityStatement"


async def test_a_transaction_mixing_writes_and_history_reads(api_on: ApiHarness) -> None:
    pid, _ = await _seed(api_on)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/$everything"}},
    ]}  # fmt: skip
    response = await api_on.client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text[:800]
    answers = response.json()["entry"]
    assert answers[0]["response"]["status"] == "201 Created"
    assert answers[1]["resource"]["type"] == "history" and answers[1]["resource"]["total"] == 2
    assert answers[2]["resource"]["type"] == "searchset" and f"Patient/{pid}" in _refs(answers[2]["resource"])


async def test_errors_are_the_entrys_outcome_as_over_rest(api_on: ApiHarness) -> None:
    pid, _ = await _seed(api_on)
    urls = [
        "Patient/nobody/_history",
        "Patient/nobody/$everything",
        "Patient/_history?_since=yesterday",
        f"Patient/{pid}/_history?_at=ge2020",
        "_history?_count=x",
        f"Patient/{pid}/$everything?start=2020-01-01",
        f"Patient/{pid}/$everything?_cursor=bogus",
        "metadata?mode=terminology",
        "metadata?mode=bogus",
    ]
    client = api_on.client
    response = await client.post("/fhir", json=_bundle(*urls))
    assert response.status_code == 200, response.text[:800]
    answers = response.json()["entry"]
    for url, answer in zip(urls, answers, strict=True):
        rest = await client.get(f"/fhir/{url}")
        assert rest.status_code in (400, 404), (url, rest.text[:300])
        assert answer["response"]["status"] == str(rest.status_code), (url, answer)
        issue = answer["response"]["outcome"]["issue"][0]
        assert issue["code"] == rest.json()["issue"][0]["code"], (url, issue)
        assert issue["diagnostics"] == rest.json()["issue"][0]["diagnostics"], (url, issue)
    # In a transaction one failing GET fails it all, naming the entry.
    transaction = _bundle(f"Patient/{pid}/_history", "Patient/nobody/$everything", kind="transaction")
    refused = await client.post("/fhir", json=transaction)
    assert refused.status_code == 404, refused.text[:500]
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    # History, $everything and metadata are read, never written.
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for url in (f"Patient/{pid}/_history", "Patient/_history", "_history", f"Patient/{pid}/$everything",
                    "metadata"):
            written = await client.post("/fhir", json=_bundle(url, method=method))
            assert written.json()["entry"][0]["response"]["status"] == "400", (method, url, written.text[:300])
    # Other operations stay refused.
    other = await client.post("/fhir", json=_bundle(f"Patient/{pid}/$match", "Patient/$everything", "$export",
                                                    f"Observation/{pid}/$everything"))
    for answer in other.json()["entry"]:
        assert answer["response"]["status"] == "400", other.text[:500]
        assert answer["response"]["outcome"]["issue"][0]["code"] == "not-supported", other.text[:500]


async def test_scopes_decide_as_over_rest(api_on: ApiHarness) -> None:
    pid, oid = await _seed(api_on)
    patients_only = api_on.with_scopes("system/Patient.rs")
    urls = ["Observation/_history", f"Observation/{oid}/_history", "_history", "Patient/_history",
            f"Patient/{pid}/_history", f"Patient/{pid}/$everything", "metadata"]
    response = await patients_only.post("/fhir", json=_bundle(*urls))
    assert response.status_code == 200, response.text[:800]
    answers = response.json()["entry"]
    statuses = [a["response"]["status"][:3] for a in answers]
    assert statuses == ["403", "403", "403", "200", "200", "200", "200"], statuses
    for url, status in zip(urls, statuses, strict=True):
        assert (await patients_only.get(f"/fhir/{url}")).status_code == int(status), url
    assert all(a["response"]["outcome"]["issue"][0]["code"] == "forbidden" for a in answers[:3])
    # $everything gives only the types the client may read, as over REST.
    everything = answers[5]["resource"]
    assert _refs(everything) == {f"Patient/{pid}"} and everything["total"] == 1
    rest = (await patients_only.get(f"/fhir/Patient/{pid}/$everything")).json()
    assert _comparable(everything) == _comparable(rest)
    # $everything needs read on Patient; instance history read, type history search.
    observations_only = api_on.with_scopes("system/Observation.rs")
    refused = await observations_only.post("/fhir", json=_bundle(f"Patient/{pid}/$everything",
                                                                 f"Patient/{pid}/_history"))
    assert [a["response"]["status"] for a in refused.json()["entry"]] == ["403", "403"], refused.text[:500]
    search_only = api_on.with_scopes("system/Observation.s")
    split = await search_only.post("/fhir", json=_bundle("Observation/_history", f"Observation/{oid}/_history"))
    assert [a["response"]["status"][:3] for a in split.json()["entry"]] == ["200", "403"], split.text[:500]
    # The audit trail is for admin clients, whatever a client's scopes on every type say.
    reader = api_on.with_scopes("system/*.rs")
    audit = await reader.post("/fhir", json=_bundle("AuditEvent/_history", "AuditEvent/x/_history", "_history"))
    assert [a["response"]["status"][:3] for a in audit.json()["entry"]] == ["403", "403", "200"], audit.text[:500]
    assert "AuditEvent" not in {e["resource"]["resourceType"] for e in audit.json()["entry"][2]["resource"]["entry"]}
    # In a transaction, a refused entry refuses it all.
    transaction = _bundle("Patient/_history", "Observation/_history", kind="transaction")
    assert (await patients_only.post("/fhir", json=transaction)).status_code == 403
