"""The sandbox's /api/dataValueSets against DHIS2's recorded import summaries."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.dhis2.samples import load_sample, shape
from tests.sandbox.conftest import ClientFactory, Demo


def monthly(demo: Demo, period: str = "202405", **values: str) -> dict[str, Any]:
    rows = [
        {"dataElement": demo.de("CHW_M_HH_VISITED"), "value": "12"},
        {"dataElement": demo.de("CHW_M_REFERRALS"), "categoryOptionCombo": demo.coc("AGE_U5"), "value": "3"},
        {
            "dataElement": demo.de("CHW_M_REFERRALS"),
            "categoryOptionCombo": demo.coc("AGE_5PLUS"),
            "value": "0",
        },
    ]
    return {
        "dataSet": demo.data_set,
        "period": period,
        "orgUnit": demo.ou("CU_KISIWA"),
        "dataValues": rows,
        **values,
    }


async def test_success_has_the_recorded_shape_and_is_idempotent(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    first = await client.post("/api/dataValueSets", json=monthly(demo))
    assert first.status_code == 200
    sample = load_sample("datavalueset-200-success-dryrun-2.40.json")
    body = first.json()
    assert body.keys() == sample.keys() and body["response"].keys() == sample["response"].keys()
    assert body["response"]["importCount"] == {"imported": 3, "updated": 0, "ignored": 0, "deleted": 0}
    again = await client.post("/api/dataValueSets", json=monthly(demo))
    assert again.json()["response"]["importCount"] == {
        "imported": 0,
        "updated": 0,
        "ignored": 3,
        "deleted": 0,
    }
    changed = monthly(demo)
    changed["dataValues"][0]["value"] = "13"
    updated = await client.post("/api/dataValueSets", json=changed)
    assert updated.json()["response"]["importCount"] == {
        "imported": 0,
        "updated": 1,
        "ignored": 2,
        "deleted": 0,
    }
    stored = (
        await client.get(
            "/api/dataValueSets",
            params={"dataSet": demo.data_set, "period": "202405", "orgUnit": demo.ou("CU_KISIWA")},
        )
    ).json()
    assert sorted(v["value"] for v in stored["dataValues"]) == ["0", "13", "3"]


@pytest.mark.parametrize(
    ("sample_name", "bad", "code"),
    [
        ("datavalueset-409-warning-E7610-dataelement-2.40.json", {"dataElement": "INVALID_1"}, "E7610"),
        ("datavalueset-409-warning-E7612-orgunit-2.40.json", {"orgUnit": "INVALID_1_OU"}, "E7612"),
    ],
)
async def test_rejected_values_are_a_warning_like_the_recorded_ones(
    client: httpx.AsyncClient, demo: Demo, sample_name: str, bad: dict[str, str], code: str
) -> None:
    body = monthly(demo)
    body.pop("orgUnit")
    for row in body["dataValues"]:
        row["orgUnit"] = demo.ou("CU_KISIWA")
    body["dataValues"][1].update(bad)
    response = await client.post("/api/dataValueSets", json=body)
    assert response.status_code == 409
    sample = load_sample(sample_name)
    got = response.json()
    assert {k: v for k, v in got.items() if k != "response"} == {
        k: v for k, v in sample.items() if k != "response"
    }
    # The recorded conflict for the value at index 1, to the letter.
    assert got["response"]["conflicts"] == sample["response"]["conflicts"][:1]
    assert got["response"]["conflicts"][0]["errorCode"] == code and got["response"]["rejectedIndexes"] == [1]
    assert got["response"]["importCount"] == {"imported": 2, "updated": 0, "ignored": 1, "deleted": 0}


async def test_conflicts_before_239_use_the_old_format(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(version="2.38.0")
    body = monthly(demo)
    body["dataValues"][0]["value"] = "40L"
    response = await client.post("/api/dataValueSets", json=body)
    sample = load_sample("datavalueset-409-warning-conflict-old-format.json")
    assert response.status_code == 409
    assert shape(response.json()["response"]["conflicts"]) == shape(sample["response"]["conflicts"])


async def test_237_answers_a_bare_summary_with_200(make_client: ClientFactory, demo: Demo) -> None:
    client = make_client(version="2.37.9")
    body = monthly(demo)
    body["dataValues"][0]["value"] = "-1"
    response = await client.post("/api/dataValueSets", json=body)
    assert response.status_code == 200
    assert response.json()["responseType"] == "ImportSummary" and response.json()["status"] == "WARNING"


@pytest.mark.parametrize(
    ("row", "code"),
    [
        ({"value": "-2"}, "E7619"),
        ({"value": "1.5"}, "E7619"),
        ({"period": "2024W5"}, "E7632"),
        ({"period": "202413"}, "E7611"),
        ({"period": "209901"}, "E7641"),
        ({"categoryOptionCombo": "Xxxxxxxxxx1"}, "E7613"),
        ({"categoryOptionCombo": "AGE_U5"}, "E7634"),
        ({"value": None}, "E7618"),
    ],
)
async def test_value_rules(client: httpx.AsyncClient, demo: Demo, row: dict[str, Any], code: str) -> None:
    if row.get("categoryOptionCombo") == "AGE_U5":
        row = {"categoryOptionCombo": demo.coc("AGE_U5")}  # households visited has no age breakdown
    body = {
        "dataSet": demo.data_set,
        "orgUnit": demo.ou("CU_KISIWA"),
        "period": "202405",
        "dataValues": [{"dataElement": demo.de("CHW_M_HH_VISITED"), "value": "7", **row}],
    }
    response = await client.post("/api/dataValueSets", json=body)
    assert response.status_code == 409
    assert [c["errorCode"] for c in response.json()["response"]["conflicts"]] == [code]


async def test_unknown_data_set_aborts_with_error(client: httpx.AsyncClient, demo: Demo) -> None:
    response = await client.post("/api/dataValueSets", json=monthly(demo, dataSet="Xxxxxxxxxx1"))
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "ERROR" and body["response"]["status"] == "ERROR"
    assert body["message"] == "An error occurred, please check import summary."
    assert body["response"]["importCount"]["ignored"] == 3


async def test_dry_run_delete_and_completion(client: httpx.AsyncClient, demo: Demo) -> None:
    dry = await client.post("/api/dataValueSets", params={"dryRun": "true"}, json=monthly(demo))
    assert dry.json()["response"]["importCount"]["imported"] == 3
    assert (await client.get("/sandbox/stats")).json()["stored"]["data_value"] == 0
    done = await client.post("/api/dataValueSets", json=monthly(demo, completeDate="2024-06-03"))
    assert done.json()["response"]["dataSetComplete"] == "2024-06-03"
    deleted = await client.post("/api/dataValueSets", params={"importStrategy": "DELETE"}, json=monthly(demo))
    assert deleted.json()["response"]["importCount"]["deleted"] == 3
    assert (await client.get("/sandbox/stats")).json()["stored"]["data_value"] == 0


async def test_a_completeness_registration_is_taken_back_by_delete(client: httpx.AsyncClient, demo: Demo) -> None:
    """DELETE /api/completeDataSetRegistrations (ds, pe, ou): 204, also when nothing is registered;
    409 naming an unknown data set, period or org unit, as DHIS2's controller answers."""
    await client.post("/api/dataValueSets", json=monthly(demo, completeDate="2024-06-03"))
    where = {"dataSet": demo.data_set, "period": "202405", "orgUnit": demo.ou("CU_KISIWA")}
    assert (await client.get("/api/dataValueSets", params=where)).json()["completeDate"] == "2024-06-03"
    target = {"ds": demo.data_set, "pe": "202405", "ou": demo.ou("CU_KISIWA")}
    for _ in range(2):
        answer = await client.delete("/api/completeDataSetRegistrations", params=target)
        assert answer.status_code == 204, answer.text
    assert "completeDate" not in (await client.get("/api/dataValueSets", params=where)).json()
    for wrong, message in (({"ds": "AAAAAAAAAAA"}, "Illegal data set identifier"),
                           ({"pe": "2024-13"}, "Illegal period identifier"),
                           ({"ou": "AAAAAAAAAAA"}, "Illegal organisation unit identifier")):
        answer = await client.delete("/api/completeDataSetRegistrations", params={**target, **wrong})
        assert answer.status_code == 409 and message in answer.json()["message"], answer.text


async def test_async_import_task(client: httpx.AsyncClient, demo: Demo) -> None:
    started = await client.post("/api/dataValueSets", params={"async": "true"}, json=monthly(demo))
    assert shape(started.json()) == shape(load_sample("datavalueset-async-job-response-docs.json"))
    task = started.json()["response"]["id"]
    for _ in range(200):
        summary = await client.get(f"/api/system/taskSummaries/DATAVALUE_IMPORT/{task}")
        if summary.status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert summary.json()["importCount"]["imported"] == 3
    notes = (await client.get(f"/api/system/tasks/DATAVALUE_IMPORT/{task}")).json()
    assert notes[0]["completed"] is True


async def test_an_insignificant_zero_deletes_the_stored_value_it_replaces(
    client: httpx.AsyncClient, demo: Demo
) -> None:
    # dhis2-core DefaultDataValueSetService: a zero of a data element whose zero is not
    # significant is skipped when nothing is stored, and deletes the stored value otherwise.
    app: Any = getattr(client, "app")  # noqa: B009
    app.state.sandbox.catalog.by_id[demo.de("CHW_M_HH_VISITED")]["zeroIsSignificant"] = False
    await client.post("/api/dataValueSets", json=monthly(demo))
    zeroed = monthly(demo)
    zeroed["dataValues"][0]["value"] = "0"
    answer = (await client.post("/api/dataValueSets", json=zeroed)).json()["response"]["importCount"]
    assert answer == {"imported": 0, "updated": 0, "ignored": 2, "deleted": 1}
    stored = (
        await client.get(
            f"/api/dataValueSets?dataSet={demo.data_set}&period=202405&orgUnit={demo.ou('CU_KISIWA')}"
        )
    ).json()["dataValues"]
    assert demo.de("CHW_M_HH_VISITED") not in {v["dataElement"] for v in stored}
    again = (await client.post("/api/dataValueSets", json=zeroed)).json()["response"]["importCount"]
    assert again == {"imported": 0, "updated": 0, "ignored": 3, "deleted": 0}
