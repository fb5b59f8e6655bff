"""Metadata endpoints, the query language and authentication of the sandbox."""

from __future__ import annotations

import base64

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, make_token
from tests.dhis2.samples import keys_of, load_sample, shape
from tests.sandbox.conftest import ClientFactory, Demo


async def test_system_info_has_the_recorded_keys(make_client: ClientFactory) -> None:
    client = make_client(version="2.40.3")
    info = (await client.get("/api/system/info")).json()
    recorded = keys_of(load_sample("system-info-response.json"))
    assert {
        "version",
        "revision",
        "calendar",
        "dateFormat",
        "contextPath",
        "systemId",
        "serverTimeZoneId",
    } <= (keys_of(info))
    assert keys_of(info) <= recorded
    assert info["version"] == "2.40.3"
    assert (await client.get("/api/system/id", params={"limit": 3})).json()["codes"][2]


async def test_paging_like_dhis2(client: httpx.AsyncClient) -> None:
    first = (await client.get("/api/dataElements", params={"pageSize": 5})).json()
    pager = first["pager"]
    assert {"page", "pageCount", "total", "pageSize", "nextPage"} == set(pager)
    assert pager["total"] == 22 and pager["pageCount"] == 5
    assert first["dataElements"][0].keys() == {"id", "displayName"}
    last = (await client.get(pager["nextPage"].replace("page=2", "page=99"))).json()
    assert last["pager"]["page"] == 5 and "nextPage" not in last["pager"] and len(last["dataElements"]) == 2
    everything = (await client.get("/api/dataElements", params={"paging": "false"})).json()
    assert "pager" not in everything and len(everything["dataElements"]) == 22
    sample = load_sample("metadata-categoryCombos-paged-list.json")
    paged = (await client.get("/api/categoryCombos", params={"fields": "id"})).json()
    assert paged["pager"].keys() == sample["pager"].keys()


async def test_fields_expand_references_and_filters_select(client: httpx.AsyncClient, demo: Demo) -> None:
    fields = (
        "id,programStages[id,repeatable,"
        "programStageDataElements[compulsory,dataElement[id,valueType,optionSet[id]]]]"
    )
    program = (await client.get(f"/api/programs/{demo.program}", params={"fields": fields})).json()
    visit = next(s for s in program["programStages"] if s["id"] == demo.visit_stage)
    assert visit["repeatable"] is True
    muac = next(
        e for e in visit["programStageDataElements"] if e["dataElement"]["id"] == demo.de("CHW_MUAC_CM")
    )
    assert muac["dataElement"] == {"id": demo.de("CHW_MUAC_CM"), "valueType": "NUMBER"}
    community = (
        await client.get(
            "/api/organisationUnits",
            params={
                "filter": ["level:eq:4", "parent.code:like:KISIWA"],
                "fields": "id,code,parent[code]~rename(facility)",
            },
        )
    ).json()
    assert community["organisationUnits"] == [
        {"id": demo.ou("CU_KISIWA"), "code": "CU_KISIWA", "facility": {"code": "FAC_KISIWA"}}
    ]
    either = (
        await client.get(
            "/api/organisationUnits",
            params={
                "filter": ["code:eq:CU_MLIMA", "code:in:[FAC_PWANI,DR]"],
                "rootJunction": "OR",
                "fields": "code",
            },
        )
    ).json()
    assert sorted(o["code"] for o in either["organisationUnits"]) == ["CU_MLIMA", "DR", "FAC_PWANI"]
    sizes = (
        await client.get("/api/optionSets", params={"fields": "code,options~size", "order": "code:asc"})
    ).json()
    assert sizes["optionSets"][0] == {"code": "CHW_REFERRAL_REASON", "options": 5}
    all_fields = (await client.get(f"/api/dataSets/{demo.data_set}")).json()
    assert {"periodType", "dataSetElements", "organisationUnits", "categoryCombo"} <= set(all_fields)
    versioned = await client.get(f"/api/41/dataSets/{demo.data_set}", params={"fields": "id"})
    assert versioned.json() == {"id": demo.data_set}


async def test_unknown_metadata_answers_dhis2_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/programs/Xxxxxxxxxx1")
    assert response.status_code == 404
    assert shape(response.json()) == shape(load_sample("webmessage-404-trackedentity-not-found.json"))
    assert response.json()["message"] == "Program with id Xxxxxxxxxx1 could not be found."


def test_tokens_carry_the_dhis2_checksum() -> None:
    documented = load_sample("api-token-create-response-docs.json")["response"]["key"]
    assert make_token(documented[6:38]) == documented
    assert DEFAULT_TOKEN.startswith("d2pat_") and len(DEFAULT_TOKEN) == 48


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Unauthorized"),
        ("ApiToken d2pat_5xVA12xyUbWNedQxy4ohH77WlxRGVvZZ1151814092", "The API token does not exists."),
        ("ApiToken d2pat_5xVA12xyUbWNedQxy4ohH77WlxRGVvZZ1151814093", "The API token does not exists."),
        ("Basic " + base64.b64encode(b"admin:wrong").decode(), "Unauthorized"),
        ("Bearer abc", "Unauthorized"),
    ],
)
async def test_refused_credentials_answer_401(
    make_client: ClientFactory, header: str | None, message: str
) -> None:
    client = make_client(auth={} if header is None else {"Authorization": header})
    response = await client.get("/api/me")
    assert response.status_code == 401
    assert response.json() == {**load_sample("DERIVED-webmessage-401-unauthorized.json"), "message": message}


async def test_basic_auth_and_read_only_users(make_client: ClientFactory, demo: Demo) -> None:
    admin = make_client(auth={"Authorization": "Basic " + base64.b64encode(b"admin:district").decode()})
    assert (await admin.get("/api/me")).json()["username"] == "admin"
    viewer = make_client(auth={"Authorization": "Basic " + base64.b64encode(b"viewer:viewer").decode()})
    assert (await viewer.get("/api/programs")).status_code == 200
    refused = await viewer.post("/api/tracker", json=demo.bundle(1))
    assert refused.status_code == 403
    assert shape(refused.json()) == shape(load_sample("webmessage-403-forbidden-docs.json"))
    assert (await viewer.get("/api/ping")).text == "pong"


@pytest.mark.parametrize(("version", "system_ping"), [("2.38.1", 200), ("2.41.0", 200), ("2.42.0", 404)])
async def test_system_ping_is_gone_from_242(make_client: ClientFactory, version: str, system_ping: int) -> None:
    client = make_client(version=version, auth={})
    assert (await client.get("/api/system/ping")).status_code == system_ping
    assert (await client.get("/api/ping")).text == "pong"  # no credentials needed
