"""FHIR Bulk Data export over HTTP on both store backends: kick-off, polling, download,
cancel, restart, scopes, data policies, ``_type``/``_since``/``_typeFilter``, Patient and
Group level, and the R4 JSON schema on every exported line.

The export pages the store 10 rows at a time and splits files past 7 resources, so even
this small seed crosses page and file boundaries.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import KEPT_LINK_EXTENSION, open_store
from tests.conftest import ApiHarness, make_token
from tests.export.helpers import ASYNC, download, export, ids, kick_off, seed, wait_done
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.schema_oracle import default_oracle


def export_settings(store_url: str, tmp_path: Path, **extra: Any) -> Settings:
    """The API with small export pages and files."""
    bulk = {"directory": tmp_path / "exports", "page_size": 10, "max_file_resources": 7,
            "deidentify_key": "k" * 40, **extra}
    return Settings(store_url=store_url, rate_limit=MACHINE_SPEED_LIMITS, bulk_export=bulk,
                    allowed_hosts=["gateway.test"])


@pytest.fixture
def settings(store_url: str, tmp_path: Path) -> Settings:
    return export_settings(store_url, tmp_path)


def patient(rid: str, org: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": f"Fam-{rid}"}],
            "managingOrganization": {"reference": f"Organization/{org}"}, "birthDate": "1990-05-17"}


def obs(rid: str, pid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "code": {"coding": [{"code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2024-03-01T10:00:00Z"}


def enc(rid: str, pid: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": rid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": f"Patient/{pid}"}}


SEED: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "org-a", "name": "A"},
    {"resourceType": "Organization", "id": "org-b", "name": "B"},
    {"resourceType": "Location", "id": "loc1", "name": "Village well"},
    *[patient(f"pa{i}", "org-a") for i in range(6)],
    *[patient(f"pb{i}", "org-b") for i in range(6)],
    *[obs(f"oa{i}", f"pa{i}", "HIV-POS" if i % 2 else "TB-NEG") for i in range(6)],
    *[obs(f"ob{i}", f"pb{i}", "HIV-POS" if i % 2 else "TB-NEG") for i in range(6)],
    *[enc(f"ea{i}", f"pa{i}") for i in range(6)],
    {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
     "member": [{"entity": {"reference": "Patient/pa1"}}, {"entity": {"reference": "Patient/pb2"}}]},
]
SEEDED = {f"{r['resourceType']}/{r['id']}" for r in SEED}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiHarness]:
    store = open_store(settings.store_url)
    seed(store, SEED)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()
    store.close()


async def test_system_export_streams_every_type_into_split_ndjson_files_that_validate(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    status_url = await kick_off(client)
    assert status_url.startswith("http://gateway.test/fhir/$export-status/")
    manifest = await wait_done(client, status_url)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export") and manifest["transactionTime"].endswith("Z")
    per_type: dict[str, int] = {}
    for item in manifest["output"]:
        assert item["url"].startswith("http://gateway.test/fhir/$export-file/") and 1 <= item["count"] <= 7
        per_type[item["type"]] = per_type.get(item["type"], 0) + item["count"]
    assert per_type == {"Encounter": 6, "Group": 1, "Location": 1, "Observation": 12, "Organization": 2, "Patient": 12}
    exported = await download(client, manifest)
    assert ids(exported) == SEEDED
    oracle = default_oracle()
    for resources in exported.values():
        for resource in resources:
            oracle.assert_valid(resource, f"{resource['resourceType']}/{resource['id']}")
    assert [r["id"] for r in exported["Patient"]] == [f"pa{i}" for i in range(6)] + [f"pb{i}" for i in range(6)]


async def test_export_files_are_gzipped_on_the_wire_for_a_client_that_accepts_it(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    manifest = await wait_done(client, await kick_off(client, _type="Observation"))
    url = manifest["output"][0]["url"]
    wire: dict[str, bytes] = {}
    for encoding in ("identity", "gzip"):
        async with client.stream("GET", url, headers={"Accept-Encoding": encoding}) as response:
            assert response.status_code == 200
            assert response.headers.get("content-encoding") == (None if encoding == "identity" else "gzip")
            wire[encoding] = b"".join([chunk async for chunk in response.aiter_raw()])
    assert gzip.decompress(wire["gzip"]) == wire["identity"] and len(wire["gzip"]) * 3 < len(wire["identity"])


async def test_only_the_client_that_kicked_off_may_poll_download_or_cancel(api: ApiHarness) -> None:
    owner, other = api.with_scopes("system/*.rs"), api.with_scopes("system/*.rs")
    status_url = await kick_off(owner, _type="Patient")
    manifest = await wait_done(owner, status_url)
    file_url = manifest["output"][0]["url"]
    assert (await other.get(status_url)).status_code == 404
    assert (await other.get(file_url)).status_code == 404
    assert (await other.delete(status_url)).status_code == 404
    assert (await api.anonymous().get(file_url)).status_code == 401
    assert (await owner.get(file_url)).status_code == 200
    assert (await owner.get(file_url.rsplit("/", 1)[0] + "/..%2Fsecret")).status_code == 404


async def test_cancel_removes_the_files_and_the_job(api: ApiHarness, settings: Settings) -> None:
    client = api.with_scopes("system/*.rs")
    status_url = await kick_off(client)
    manifest = await wait_done(client, status_url)
    folder = settings.bulk_export.directory / status_url.rsplit("/", 1)[1]
    assert sorted(p.name for p in folder.iterdir()) != []
    answer = await client.delete(status_url)
    assert answer.status_code == 202 and answer.json()["resourceType"] == "OperationOutcome"
    assert not folder.exists()
    assert (await client.get(status_url)).status_code == 404
    assert (await client.get(manifest["output"][0]["url"])).status_code == 404


async def test_cancel_while_running_stops_the_job(store_url: str, tmp_path: Path) -> None:
    settings = export_settings(store_url, tmp_path, page_size=10)
    store = open_store(store_url)
    seed(store, [obs(f"o{i}", "p", "X") for i in range(3000)])
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        client = harness.with_scopes("system/*.rs")
        status_url = await kick_off(client, _type="Observation")
        first = await client.get(status_url)
        assert first.status_code == 202  # 300 pages take longer than one poll
        assert (await client.delete(status_url)).status_code == 202
        assert (await client.get(status_url)).status_code == 404
        folder = settings.bulk_export.directory / status_url.rsplit("/", 1)[1]
        for _ in range(500):
            if not folder.exists() and not app.state.ctx.services.exports.running(status_url.rsplit("/", 1)[1]):
                break
            await asyncio.sleep(0.02)
        assert not folder.exists()
        await harness.aclose()
    store.close()


async def test_a_restart_reports_an_interrupted_job_as_failed(store_url: str, tmp_path: Path) -> None:
    settings = export_settings(store_url, tmp_path, page_size=10)
    store = open_store(store_url)
    seed(store, [obs(f"o{i}", "p", "X") for i in range(3000)])
    token = make_token(store, ("system/*.rs",))
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
                                     headers=headers) as client:
            status_url = await kick_off(client, _type="Observation")
    # The app stopped mid-export; a new process finds the job in the store and says what happened.
    again = create_app(settings, store=store)
    async with again.router.lifespan_context(again):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://gateway.test",
                                     headers=headers) as client:
            answer = await client.get(status_url)
            assert answer.status_code == 500, answer.text
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert "stopped" in answer.json()["issue"][0]["diagnostics"]
    store.close()


async def test_a_job_whose_process_died_is_failed_once_its_heartbeat_is_stale(store_url: str, tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from gateway.store import ExportJob

    settings = export_settings(store_url, tmp_path)
    store = open_store(store_url)
    token = make_token(store, ("system/*.rs",), name="dead-owner")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    job = ExportJob(job_id="deadbeef", client="dead-owner", status="running", request="x", params={},
                    created=long_ago, updated=long_ago, transaction_time=long_ago, progress="1/3 types")
    store.export_save(job)
    store.export_save(replace(job, job_id="fresh", updated=datetime.now(UTC)))
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            dead = await client.get("/fhir/$export-status/deadbeef")
            assert dead.status_code == 500 and "restarted" in dead.json()["issue"][0]["diagnostics"]
            # A heartbeat within stale_seconds may belong to another live process: still running.
            assert (await client.get("/fhir/$export-status/fresh")).status_code == 202
    store.close()


@pytest.mark.parametrize("params, where", [
    ({"_type": "Nope"}, "_type"),
    ({"_since": "last tuesday"}, "_since"),
    ({"_outputFormat": "text/csv"}, "_outputFormat"),
    ({"_elements": "id"}, "_elements"),
    ({"_typeFilter": "Observation"}, "_typeFilter"),
    ({"_typeFilter": "Observation?nope=1"}, "_typeFilter"),
    ({"_typeFilter": "Observation?_count=5"}, "_typeFilter"),
    ({"_type": "Patient", "_typeFilter": "Observation?code=X"}, "_typeFilter"),
    ({"_deidentify": "marketing"}, "_deidentify"),
])  # fmt: skip
async def test_invalid_parameters_get_an_operation_outcome_naming_them(
    api: ApiHarness, params: dict[str, str], where: str
) -> None:
    response = await api.with_scopes("system/*.rs").get("/fhir/$export", params=params, headers=ASYNC)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [where]


async def test_kick_off_needs_prefer_respond_async_and_a_token(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    response = await client.get("/fhir/$export")
    assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["Prefer"]
    assert (await api.anonymous().get("/fhir/$export", headers=ASYNC)).status_code == 401


async def test_scopes_decide_the_types(api: ApiHarness) -> None:
    client = api.with_scopes("system/Patient.rs", "system/Encounter.rs")
    exported = await export(client)
    assert set(exported) == {"Patient", "Encounter"}  # no Observation file without its scope
    refused = await client.get("/fhir/$export", params={"_type": "Patient,Observation"}, headers=ASYNC)
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    no_group = await client.get("/fhir/Group/g1/$export", headers=ASYNC)
    assert no_group.status_code == 403


async def test_type_since_and_type_filters(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    only = await export(client, _type="Observation,Encounter")
    assert set(only) == {"Observation", "Encounter"} and len(only["Observation"]) == 12
    filtered = await export(client, _type="Observation", _typeFilter="Observation?code=HIV-POS")
    assert sorted(r["id"] for r in filtered["Observation"]) == ["oa1", "oa3", "oa5", "ob1", "ob3", "ob5"]
    # Two filters of one type: the union, each resource once.
    union = await export(client, _type="Observation",
                         _typeFilter=["Observation?code=HIV-POS", "Observation?subject=Patient/pa0,Patient/pa1"])
    assert sorted(r["id"] for r in union["Observation"]) == ["oa0", "oa1", "oa3", "oa5", "ob1", "ob3", "ob5"]
    written = await api.client.put("/fhir/Observation/ob4", json=obs("ob4", "pb4", "TB-POS"))
    assert written.status_code == 200, written.text
    updated = (await client.get("/fhir/Observation/ob4")).json()
    since = await export(client, _since=updated["meta"]["lastUpdated"])
    # The REST write also recorded a Provenance naming its client.
    assert set(since) == {"Observation", "Provenance"} and ids(since) - ids({"Provenance": since["Provenance"]}) == {
        "Observation/ob4"}
    assert since["Provenance"][0]["target"][0]["reference"].startswith("Observation/ob4")


async def test_patient_and_group_level_exports_are_compartments(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    patients = await export(client, "/fhir/Patient/$export")
    # The Group lists Patients as members: it is in their compartment (CompartmentDefinition Patient).
    compartment = {r for r in SEEDED if r.split("/")[0] in ("Patient", "Observation", "Encounter", "Group")}
    assert ids(patients) == compartment
    group = await export(client, "/fhir/Group/g1/$export")
    assert ids(group) == {"Patient/pa1", "Observation/oa1", "Encounter/ea1", "Patient/pb2", "Observation/ob2",
                          "Group/g1"}
    missing = await client.get("/fhir/Group/nope/$export", headers=ASYNC)
    assert missing.status_code == 404


async def test_the_data_policy_limits_what_is_exported(api: ApiHarness) -> None:
    token = make_token(api.store, ("system/*.rs",), name="district-a")
    api.store.set_client_policy("district-a", {"organizations": ["Organization/org-a"]})
    client = api.with_scopes(token=token)
    exported = await export(client)
    assert ids(exported) == {r for r in SEEDED if not r.startswith(("Patient/pb", "Observation/ob"))}
    # The Group names pb2, who is hidden; its compartment is not exported.
    group = await export(client, "/fhir/Group/g1/$export")
    assert ids(group) == {"Patient/pa1", "Observation/oa1", "Encounter/ea1", "Group/g1"}


async def test_a_row_limited_export_leaves_out_the_identity_matchers_links(api: ApiHarness) -> None:
    """As on its reads (tests/api/test_data_policy.py): a link the matcher wrote names another
    source's record of the person, which the policy may hide."""
    kept = {"other": {"reference": "Patient/pb1"}, "type": "seealso",
            "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": "score 21.0"}]}
    with api.store.transaction() as tx:
        tx.update({**patient("pa1", "org-a"), "link": [kept, {"other": {"reference": "Patient/pa2"},
                                                              "type": "seealso"}]})
    token = make_token(api.store, ("system/*.rs",), name="district-a")
    api.store.set_client_policy("district-a", {"organizations": ["Organization/org-a"]})
    exported = await export(api.with_scopes(token=token), _type="Patient")
    (pa1,) = [p for p in exported["Patient"] if p["id"] == "pa1"]
    assert pa1["link"] == [{"other": {"reference": "Patient/pa2"}, "type": "seealso"}]
    everything = await export(api.with_scopes("system/*.rs"), _type="Patient")
    assert len(next(p for p in everything["Patient"] if p["id"] == "pa1")["link"]) == 2


async def test_a_deidentify_policy_applies_to_exports(api: ApiHarness) -> None:
    token = make_token(api.store, ("system/*.rs",), name="researcher")
    api.store.set_client_policy("researcher", {"deidentify": True})
    exported = await export(api.with_scopes(token=token), _type="Patient")
    assert all("name" not in p and p["birthDate"] == "1990" for p in exported["Patient"])


async def test_a_deidentify_policy_holds_whatever_export_profile_the_client_picks(
    store_url: str, tmp_path: Path
) -> None:
    """``_deidentify=<profile>`` adds a profile's rules to what the client's data policy strips; it
    never replaces them (an operator's lighter profile, e.g. for an internal registry, would otherwise
    hand a de-identified client names, identifiers and full birth dates)."""
    light = tmp_path / "dates-only.yaml"
    light.write_text("name: dates-only\ndates: {shift_days: 0}\nids: keep\n", encoding="utf-8")
    settings = export_settings(store_url, tmp_path, profiles={"dates-only": light})
    store = open_store(settings.store_url)
    seed(store, SEED)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        api = ApiHarness(app, store)
        token = make_token(store, ("system/*.rs",), name="researcher")
        store.set_client_policy("researcher", {"deidentify": True})
        researcher = api.with_scopes(token=token)
        for profile in ("dates-only", "research"):
            exported = await export(researcher, _type="Patient", _deidentify=profile)
            assert len(exported["Patient"]) == 12, profile
            # (research shifts each patient's dates, so its year may be a neighbour of 1990)
            assert all("name" not in p and len(p["birthDate"]) == 4 for p in exported["Patient"]), profile
        # The light profile as such, for a client without the policy: names stay.
        full = await export(api.client, _type="Patient", _deidentify="dates-only")
        assert all(p["name"] for p in full["Patient"])
        await api.aclose()
    store.close()


async def test_the_capability_statement_declares_the_operations(api: ApiHarness) -> None:
    statement = (await api.anonymous().get("/fhir/metadata")).json()
    rest = statement["rest"][0]
    assert [op["name"] for op in rest["operation"]] == ["export"]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert "export" in [op["name"] for op in by_type["Patient"]["operation"]]
    assert [op["name"] for op in by_type["Group"]["operation"]] == ["export", "validate"]
    assert "_deidentify" in rest["operation"][0]["documentation"]


def parameters(*parts: tuple[str, str]) -> dict[str, Any]:
    """A kick-off ``Parameters`` body; ``patient`` parts as references, the others as strings."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": name, "valueReference": {"reference": value}} if name == "patient" else
        {"name": name, "valueString": value} for name, value in parts]}  # fmt: skip


async def post_export(client: httpx.AsyncClient, path: str, *parts: tuple[str, str]) -> dict[str, Any]:
    """Kick off with POST and a Parameters body; the manifest once done."""
    response = await client.post(path, json=parameters(*parts), headers=ASYNC)
    assert response.status_code == 202, response.text
    return await wait_done(client, response.headers["Content-Location"])


async def test_a_post_kick_off_takes_a_parameters_body(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    manifest = await post_export(client, "/fhir/$export", ("_type", "Observation"),
                                 ("_typeFilter", "Observation?code=HIV-POS"),
                                 ("_outputFormat", "application/fhir+ndjson"))
    exported = await download(client, manifest)
    assert sorted(r["id"] for r in exported["Observation"]) == ["oa1", "oa3", "oa5", "ob1", "ob3", "ob5"]
    assert manifest["request"].endswith("/$export") and manifest["error"] == []


async def test_the_patient_parameter_limits_patient_and_group_exports_to_those_compartments(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    two = await download(client, await post_export(client, "/fhir/Patient/$export",
                                                   ("patient", "Patient/pa1"), ("patient", "Patient/pb2")))
    assert ids(two) == {"Patient/pa1", "Observation/oa1", "Encounter/ea1", "Patient/pb2", "Observation/ob2",
                        "Group/g1"}
    # Within a Group, only the listed members: pa3 is no member, so nothing of theirs.
    members = await download(client, await post_export(client, "/fhir/Group/g1/$export",
                                                       ("patient", "Patient/pa1"), ("patient", "Patient/pa3")))
    assert ids(members) == {"Patient/pa1", "Observation/oa1", "Encounter/ea1", "Group/g1"}
    typed = await download(client, await post_export(client, "/fhir/Patient/$export", ("_type", "Observation"),
                                                     ("patient", "Patient/pb4")))
    assert ids(typed) == {"Observation/ob4"}


@pytest.mark.parametrize(("path", "body", "where"), [
    ("/fhir/$export", {"resourceType": "Bundle"}, "Parameters"),
    ("/fhir/$export", parameters(("patient", "Patient/pa1")), "patient"),
    ("/fhir/Patient/$export", parameters(("patient", "Observation/oa1")), "patient"),
    ("/fhir/Patient/$export", {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": "x"}]},
     "Parameters.parameter[0].valueReference"),
    ("/fhir/Patient/$export", {"resourceType": "Parameters", "parameter": [{"name": "_type"}]},
     "Parameters.parameter[0]"),
    ("/fhir/Patient/$export", parameters(("_elements", "id")), "_elements"),
])  # fmt: skip
async def test_invalid_post_kick_offs_get_an_operation_outcome_naming_the_part(
    api: ApiHarness, path: str, body: dict[str, Any], where: str
) -> None:
    response = await api.with_scopes("system/*.rs").post(path, json=body, headers=ASYNC)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [where]


async def test_a_type_a_compartment_export_cannot_hold_is_reported_in_the_error_files(api: ApiHarness) -> None:
    client = api.with_scopes("system/*.rs")
    manifest = await wait_done(client, await kick_off(client, "/fhir/Patient/$export", _type="Patient,Organization"))
    assert [item["type"] for item in manifest["output"]] == ["Patient"] * len(manifest["output"])
    [error] = manifest["error"]
    assert error["type"] == "OperationOutcome" and error["count"] == 1
    response = await client.get(error["url"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+ndjson")
    [line] = response.content.splitlines()
    outcome = orjson.loads(line)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Organization"] and "compartment" in outcome["issue"][0]["diagnostics"]
    system = await wait_done(client, await kick_off(client, _type="Organization"))
    assert system["error"] == [] and len(system["output"]) == 1  # a system export has every type


async def test_stored_json_holding_a_newline_still_makes_one_line(api: ApiHarness) -> None:
    # The store writes compact JSON and the export copies its bytes as they are; a row written
    # otherwise (pretty-printed by a hand repair) is re-serialized rather than split over two lines.
    raw: Any = api.store
    with raw._write_cursor() as cur:
        cur.execute(raw.q("SELECT content FROM resources WHERE rtype = 'Patient' AND id = 'pa1'"))
        stored = orjson.loads(bytes(cur.fetchone()[0]))
        cur.execute(raw.q("UPDATE resources SET content = ? WHERE rtype = 'Patient' AND id = 'pa1'"),
                    (orjson.dumps(stored, option=orjson.OPT_INDENT_2),))
    exported = await export(api.with_scopes("system/*.rs"), _type="Patient")  # download() checks the lines
    assert [r["id"] for r in exported["Patient"]] == [f"pa{i}" for i in range(6)] + [f"pb{i}" for i in range(6)]
    assert exported["Patient"][1] == stored


async def test_a_download_is_checked_against_the_clients_grant_now(api: ApiHarness) -> None:
    """Files written under a wider grant are not handed to a narrowed one: a narrower SMART access
    token of the same client, or the client after its data policy changed."""
    from datetime import timedelta

    from gateway.auth import ACCESS_TOKEN_PREFIX, hash_token

    token = make_token(api.store, ("system/*.rs",), name="exporter")
    owner = api.with_scopes(token=token)
    manifest = await wait_done(owner, await kick_off(owner, _type="Patient,Observation"))
    urls = {item["type"]: item["url"] for item in manifest["output"]}
    narrow = f"{ACCESS_TOKEN_PREFIX}{'n' * 40}"
    expires = datetime.now(UTC) + timedelta(minutes=5)
    api.store.save_access_token(hash_token(narrow), "exporter", ("system/Observation.rs",), expires)
    narrowed = api.with_scopes(token=narrow)
    assert (await narrowed.get(urls["Observation"])).status_code == 200
    refused = await narrowed.get(urls["Patient"])
    assert refused.status_code == 403 and "Patient" in refused.text
    assert (await owner.get(urls["Patient"])).status_code == 200
    api.store.set_client_policy("exporter", {"organizations": ["Organization/org-a"]})
    api.app.state.ctx.auth.forget()  # type: ignore[attr-defined]  # set-policy is seen within a second
    changed = await owner.get(urls["Patient"])
    assert changed.status_code == 403 and "policy changed" in changed.text
