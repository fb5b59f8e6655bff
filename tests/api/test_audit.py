"""The audit trail over HTTP: one AuditEvent per access, admin-only search, no secrets, Provenance of writes.

Every test runs on SQLite and PostgreSQL (``settings`` follows ``store_url``). AuditEvents
are written by the background writer; ``flushed`` writes what is buffered before looking.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from gateway.audit import AuditWriter
from gateway.settings import Settings
from gateway.store import Store
from tests.api.test_fhir_api import assert_outcome
from tests.conftest import ApiHarness, make_token
from tests.ingest.conftest import MAPPINGS, Harness, make_app, sample

CLIENT = "urn:chw-gateway:client"


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The API on each store backend."""
    return Settings(store_url=store_url)


def writer_of(app: Any) -> AuditWriter:
    writer = app.state.ctx.services.audit
    assert isinstance(writer, AuditWriter)
    return writer


async def flushed(app: Any) -> None:
    writer = writer_of(app)
    while writer.pending:
        assert await writer.flush()


def stored_events(store: Store) -> list[dict[str, Any]]:
    """Every stored AuditEvent, oldest first (read straight from the store: no request, no new event)."""
    from gateway.search import QueryParser, default_registry

    parser = QueryParser(default_registry(), 20, 1000)
    query = parser.parse("AuditEvent", [("_count", "1000"), ("_sort", "_lastUpdated")])
    return [orjson.loads(r.content) for r in store.search(query).resources]


def client_named(api: ApiHarness, name: str, *scopes: str) -> httpx.AsyncClient:
    return api.with_scopes(*scopes, token=make_token(api.store, tuple(scopes), name=name))


def refs(event: dict[str, Any], role: str) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if e.get("role", {}).get("code") == role
            and "reference" in e.get("what", {})]  # fmt: skip


def one(events: list[dict[str, Any]], subtype: str) -> dict[str, Any]:
    found = [e for e in events if e["subtype"][0]["code"] == subtype]
    assert len(found) == 1, [e["subtype"][0]["code"] for e in events]
    return found[0]


async def seed(c: httpx.AsyncClient) -> None:
    for resource in (
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Jones"}]},
        {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "bp"},
         "subject": {"reference": "Patient/p1"}},
    ):  # fmt: skip
        assert (await c.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)).status_code == 201


async def test_a_read_names_the_client_the_resource_and_the_patient(api: ApiHarness) -> None:
    await seed(api.client)
    reader = client_named(api, "clinic-app", "system/*.rs")
    assert (await reader.get("/fhir/Patient/p1")).status_code == 200
    assert (await reader.get("/fhir/Observation/o1")).status_code == 200
    await flushed(api.app)
    events = [e for e in stored_events(api.store) if e["subtype"][0]["code"] == "read"]
    patient_read, observation_read = events
    assert patient_read["type"] == {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                                    "code": "rest", "display": "Restful Operation"}
    assert patient_read["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
    assert patient_read["action"] == "R" and patient_read["outcome"] == "0"
    client, server = patient_read["agent"]
    assert client["who"]["identifier"] == {"system": CLIENT, "value": "clinic-app"} and client["requestor"] is True
    assert client["network"] == {"address": "127.0.0.1", "type": "2"}
    assert server["requestor"] is False and patient_read["source"]["observer"]["display"] == "chw-gateway"
    assert refs(patient_read, "4") == ["Patient/p1/_history/1"] and refs(patient_read, "1") == ["Patient/p1"]
    assert refs(observation_read, "4") == ["Observation/o1/_history/1"]
    assert refs(observation_read, "1") == ["Patient/p1"]


async def test_a_search_keeps_its_parameters_and_the_patients_it_returned(api: ApiHarness) -> None:
    await seed(api.client)
    assert (await api.client.get("/fhir/Observation", params={"subject": "Patient/p1", "_count": "5"})).json()[
        "total"] == 1  # fmt: skip
    await flushed(api.app)
    search = one(stored_events(api.store), "search-type")
    assert search["action"] == "E"
    (query,) = [e for e in search["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]).decode() == "subject=Patient%2Fp1&_count=5"
    # As BALP's Query: the query and the patients concerned, not every resource returned.
    assert refs(search, "1") == ["Patient/p1"] and refs(search, "4") == []


async def test_refusals_and_misses_are_minor_failures_naming_what_was_asked(api: ApiHarness) -> None:
    await seed(api.client)
    outsider = client_named(api, "outsider", "system/Observation.rs")
    assert_outcome(await outsider.get("/fhir/Patient/p1"), 403)
    assert_outcome(await api.client.get("/fhir/Patient/nobody"), 404)
    assert_outcome(await api.anonymous().get("/fhir/Patient/p2"), 401)
    await flushed(api.app)
    reads = [e for e in stored_events(api.store) if e["subtype"][0]["code"] == "read"]
    assert [(e["outcome"], e["outcomeDesc"], refs(e, "1")) for e in reads] == [
        ("4", "HTTP 403", ["Patient/p1"]), ("4", "HTTP 404", ["Patient/nobody"]), ("4", "HTTP 401", ["Patient/p2"])
    ]
    assert reads[0]["agent"][0]["who"]["identifier"]["value"] == "outsider"
    assert reads[2]["agent"][0]["who"] == {"display": "unauthenticated"}


async def test_a_transaction_lists_its_entries_and_a_batch_is_a_batch(api: ApiHarness) -> None:
    await seed(api.client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": "New"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:1"}}, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": "Observation/o1"}},
    ]}  # fmt: skip
    response = (await api.client.post("/fhir", json=bundle)).json()
    new_patient = response["entry"][0]["response"]["location"]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient/p2"}}]}
    assert (await api.client.post("/fhir", json=batch)).status_code == 200
    await flushed(api.app)
    events = stored_events(api.store)
    transaction = one(events, "transaction")
    written = refs(transaction, "4")
    assert written[0] == new_patient and written[1].startswith("Observation/") and written[2] == "Observation/o1"
    assert refs(transaction, "1") == [f"Patient/{new_patient.split('/')[1]}"]
    assert refs(one(events, "batch"), "4") == ["Patient/p2/_history/1"]


async def test_a_batch_names_the_instance_its_history_and_everything_entries_read(api: ApiHarness) -> None:
    # As over REST, where the audit names the path's instance: GET Patient/p1/$everything names p1.
    await seed(api.client)
    urls = ["Patient/p1/$everything?_count=5", "Patient/p2/_history", "Observation/_history", "Patient/nobody/_history",
            "metadata"]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": url}}
                                                                   for url in urls]}  # fmt: skip
    response = await api.client.post("/fhir", json=batch)
    assert response.status_code == 200, response.text[:500]
    await flushed(api.app)
    event = one(stored_events(api.store), "batch")
    assert refs(event, "4") == ["Patient/p1", "Patient/p2", "Patient/nobody"]
    assert {"Patient/p1", "Patient/p2"} <= set(refs(event, "1"))


async def test_a_batch_names_the_patients_its_reads_and_searches_returned(api: ApiHarness) -> None:
    # As a REST read of Observation/o1 or a search finding it names Patient/p1 (a search lists its
    # patients, not every resource it returned).
    await seed(api.client)
    for url in ("Observation/o1", "Observation?status=final", "Patient?family=Jones"):
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": url}}]}
        response = await api.client.post("/fhir", json=batch)
        assert response.status_code == 200, response.text[:500]
    await flushed(api.app)
    events = [e for e in stored_events(api.store) if e["subtype"][0]["code"] == "batch"]
    assert [refs(e, "1") for e in events] == [["Patient/p1"], ["Patient/p1"], ["Patient/p2"]]


async def test_a_batch_delete_naming_an_odd_version_is_audited_not_a_500(api: ApiHarness) -> None:
    # The audit read the version of a DELETE entry's URL with int() after str.isdigit(): "²" and a
    # 5,000-digit version raised ValueError, and the batch, its POST already stored, answered 500
    # "the request was not applied".
    entries = [{"resource": {"resourceType": "Patient", "name": [{"family": "Kept"}]},
                "request": {"method": "POST", "url": "Patient"}}]  # fmt: skip
    entries += [{"request": {"method": "DELETE", "url": f"Patient/x/_history/{v}"}} for v in ("\u00b2", "9" * 5000)]
    response = await api.client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["entry"][0]["response"]["status"].startswith("201")
    await flushed(api.app)
    assert one(stored_events(api.store), "batch")


async def test_only_admin_reads_the_audit_trail_and_nobody_writes_it(api: ApiHarness) -> None:
    await seed(api.client)
    assert (await api.client.get("/fhir/Patient/p1")).status_code == 200
    await flushed(api.app)
    admin = client_named(api, "dpo", "admin")
    by_entity = (await admin.get("/fhir/AuditEvent", params={"entity": "Patient/p1", "subtype": "read"})).json()
    assert by_entity["total"] == 1
    event_id = by_entity["entry"][0]["resource"]["id"]
    assert len((await admin.get("/fhir/AuditEvent", params={"patient": "Patient/p1"})).json()["entry"]) >= 2
    assert (await admin.get("/fhir/AuditEvent", params={"agent-name": "dpo"})).json()["total"] == 0  # not yet flushed
    assert (await admin.get(f"/fhir/AuditEvent/{event_id}")).status_code == 200
    assert (await admin.get("/fhir/AuditEvent", params={"outcome": "0", "date": "ge2020-01-01"})).json()["total"] >= 4

    reader = client_named(api, "reader", "system/*.rs")
    narrow = client_named(api, "narrow", "system/AuditEvent.rs", "system/Patient.rs")
    for client in (reader, narrow):
        assert_outcome(await client.get("/fhir/AuditEvent"), 403)
        assert_outcome(await client.get(f"/fhir/AuditEvent/{event_id}"), 403)
        assert_outcome(await client.get(f"/fhir/AuditEvent/{event_id}/_history"), 403)
        assert_outcome(await client.get(f"/fhir/AuditEvent/{event_id}/_history/1"), 403)
        assert_outcome(await client.get("/fhir/AuditEvent/_history"), 403)
        assert_outcome(await client.get("/fhir/Patient", params={"_revinclude": "AuditEvent:entity"}), 403)
        assert_outcome(await client.get("/fhir/Patient", params={"_has:AuditEvent:entity:outcome": "0"}), 403)
    system = (await reader.get("/fhir/_history", params={"_count": "1000"})).json()
    assert {e["request"]["url"].split("/")[0] for e in system["entry"]} == {"Patient", "Observation", "Provenance"}

    everyone = client_named(api, "root", "system/*.cruds", "admin")
    everything = (await everyone.get("/fhir/Patient/p1/$everything")).json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Observation", "Provenance"}
    event = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-01-01T00:00:00Z",
             "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}  # fmt: skip
    assert_outcome(await everyone.post("/fhir/AuditEvent", json=event), 403)
    assert_outcome(await everyone.put(f"/fhir/AuditEvent/{event_id}", json={**event, "id": event_id}), 403)
    assert_outcome(await everyone.delete(f"/fhir/AuditEvent/{event_id}"), 403)
    assert_outcome(await everyone.delete("/fhir/AuditEvent", params={"_id": event_id}), 403)
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind,
                  "entry": [{"resource": event, "request": {"method": "POST", "url": "AuditEvent"}}]}
        answer = await everyone.post("/fhir", json=bundle)
        if kind == "transaction":
            assert_outcome(answer, 403)
        else:
            assert answer.json()["entry"][0]["response"]["status"] == "403"
    await flushed(api.app)
    assert (await admin.get(f"/fhir/AuditEvent/{event_id}")).json()["meta"]["versionId"] == "1"


async def test_audit_writes_stay_out_of_the_change_feed(api: ApiHarness) -> None:
    await seed(api.client)
    before = api.store.last_change_seq()
    for _ in range(5):
        assert (await api.client.get("/fhir/Patient/p1")).status_code == 200
    await flushed(api.app)
    assert len(stored_events(api.store)) >= 8
    assert api.store.last_change_seq() == before
    assert {c.type for c in api.store.changes(0)} == {"Patient", "Observation", "Provenance"}


async def test_no_secret_and_no_body_reaches_the_audit_trail(api: ApiHarness) -> None:
    token = make_token(api.store, ("system/*.cruds",), name="careful")
    c = api.with_scopes(token=token)
    marker = "ZEBRA-SECRET-7731"
    created = await c.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": marker}]})
    assert created.status_code == 201
    assert (await c.put(f"/fhir/Patient/{created.json()['id']}",
                        json={**created.json(), "gender": "other"})).status_code == 200  # fmt: skip
    assert (await c.get("/fhir/Patient", params={"access_token": marker, "name": "x"})).status_code == 200
    assert_outcome(await c.post("/fhir/Patient", content=f'{{"resourceType": "Patient", "bad": "{marker}"}}'), 400)
    # A POST search's form holds its parameters: they are the query, kept like a GET's.
    assert (await c.post("/fhir/Patient/_search", data={"family": "Kept"})).status_code == 200
    await flushed(api.app)
    stored = [orjson.dumps(event) for event in stored_events(api.store)]
    assert len(stored) == 5
    queries = [base64.b64decode(e["query"]) for c in stored for e in orjson.loads(c).get("entity", []) if "query" in e]
    texts = b"".join(stored + queries)
    assert marker.encode() not in texts and token.encode() not in texts and b"Bearer" not in texts
    assert b"family=Kept" in texts and b"name=x" in texts


async def test_rest_writes_record_the_client_in_provenance(api: ApiHarness) -> None:
    c = client_named(api, "emr-sync", "system/*.cruds")
    created = (await c.post("/fhir/Patient", json={"resourceType": "Patient", "active": True})).json()
    pid = created["id"]
    assert (await c.put(f"/fhir/Patient/{pid}", json={**created, "active": False})).status_code == 200
    assert (await c.delete(f"/fhir/Patient/{pid}")).status_code == 200
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "t1"}, "request": {"method": "PUT", "url": "Patient/t1"}},
        {"resource": {"resourceType": "Patient", "id": "t2"}, "request": {"method": "PUT", "url": "Patient/t2"}},
    ]}  # fmt: skip
    assert (await c.post("/fhir", json=bundle)).status_code == 200
    found = (await c.get("/fhir/Provenance", params={"target": f"Patient/{pid}"})).json()
    activities = sorted(
        (e["resource"]["activity"]["coding"][0]["code"], e["resource"]["target"][0]["reference"])
        for e in found["entry"]
    )
    assert activities == [("CREATE", f"Patient/{pid}/_history/1"), ("DELETE", f"Patient/{pid}/_history/3"),
                          ("UPDATE", f"Patient/{pid}/_history/2")]
    for entry in found["entry"]:
        (agent,) = entry["resource"]["agent"]
        assert agent["who"]["identifier"] == {"system": CLIENT, "value": "emr-sync"}
        assert agent["type"]["coding"][0]["code"] == "author"
    (from_bundle,) = (await c.get("/fhir/Provenance", params={"target": "Patient/t1"})).json()["entry"]
    assert [t["reference"] for t in from_bundle["resource"]["target"]] == ["Patient/t1/_history/1",
                                                                           "Patient/t2/_history/1"]
    # A conditional create that found its match wrote nothing, so it has no Provenance.
    before = api.store.last_change_seq()
    again = await c.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": "_id=t1"})
    assert again.status_code == 200 and api.store.last_change_seq() == before


async def test_admin_actions_and_replays_are_audited(api: ApiHarness) -> None:
    admin = client_named(api, "ops", "admin")
    assert (await admin.post("/admin/dead-letters/job-7/replay")).status_code == 503  # no delivery in this app
    assert (await admin.get("/admin/quarantine", params={"source": "cht", "status": "all"})).status_code == 200
    assert (await admin.post("/admin/quarantine/99/replay")).status_code >= 400
    await flushed(api.app)
    events = stored_events(api.store)
    replay = one(events, "dead-letter-replay")
    assert replay["type"]["code"] == "110106" and replay["outcome"] == "8"
    assert replay["entity"][0]["name"] == "dead-letter/job-7"
    listing = one(events, "quarantine-list")
    assert listing["type"]["code"] == "110100" and listing["action"] == "R"
    (query,) = [e for e in listing["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query["query"]) == b"source=cht&status=all"
    held = one(events, "quarantine-replay")
    assert held["type"]["code"] == "110107" and held["entity"][0]["name"] == "quarantine/99"
    assert held["agent"][0]["who"]["identifier"]["value"] == "ops"


async def test_ingest_is_an_import_listing_what_it_wrote(store: Store) -> None:
    app = make_app(store, MAPPINGS)
    async with app.router.lifespan_context(app):
        gw = Harness(app, store, MAPPINGS)
        response = await gw.sender.post("/ingest/kobo", content=sample("kobo", "hypertension-visit"),
                                        headers={"Content-Type": "application/json"})
        assert response.status_code == 200
        await flushed(app)
        written = [r for r in response.json()["results"][0]["resources"]]
        (event,) = stored_events(store)
        await gw.aclose()
    assert event["type"]["code"] == "110107" and event["subtype"][0]["code"] == "ingest" and event["action"] == "C"
    assert event["entity"][0]["name"] == "source/kobo"
    patient = next(w for w in written if w["type"] == "Patient")
    assert refs(event, "1") == [f"Patient/{patient['id']}"]
    assert len(refs(event, "4")) == len(written)


async def test_an_include_never_hands_an_audit_event_to_a_non_admin(api: ApiHarness) -> None:
    await seed(api.client)
    await flushed(api.app)
    event_id = stored_events(api.store)[0]["id"]
    listing = {"resourceType": "List", "id": "l1", "status": "current", "mode": "working",
               "entry": [{"item": {"reference": f"AuditEvent/{event_id}"}}, {"item": {"reference": "Patient/p1"}}]}
    assert (await api.client.put("/fhir/List/l1", json=listing)).status_code == 201
    reader = client_named(api, "reader", "system/*.rs")
    root = client_named(api, "root", "system/*.cruds", "admin")
    for client, expected in ((reader, {"List", "Patient"}), (root, {"List", "Patient", "AuditEvent"})):
        found = (await client.get("/fhir/List", params={"_id": "l1", "_include": "List:item"})).json()
        assert {e["resource"]["resourceType"] for e in found["entry"]} == expected


async def test_a_request_refused_by_the_rate_limit_is_audited_with_its_client(store_url: str) -> None:
    from gateway.api.app import create_app
    from gateway.store import open_store

    store = open_store(store_url)
    app = create_app(Settings(store_url=store_url, rate_limit={"burst": 1, "requests_per_second": 0.01}),
                     store=store)
    async with app.router.lifespan_context(app):
        api = ApiHarness(app, store)
        hasty = client_named(api, "hasty", "system/*.rs")
        assert (await hasty.get("/fhir/Patient")).status_code == 200
        assert (await hasty.get("/fhir/Patient")).status_code == 429
        await flushed(app)
        searches = [e for e in stored_events(store) if e["subtype"][0]["code"] == "search-type"]
        assert [(e["outcome"], e["outcomeDesc"], e["agent"][0]["who"]["identifier"]["value"]) for e in searches] == [
            ("0", "HTTP 200", "hasty"), ("4", "HTTP 429", "hasty")]
        await api.aclose()
    store.close()
