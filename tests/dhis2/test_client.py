"""The DHIS2 HTTP client and the async job flow, against respx-recorded answers."""

from __future__ import annotations

import httpx
import pytest
import respx

from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.errors import (
    Dhis2HttpError,
    Dhis2JobLost,
    Dhis2JobTimeout,
    Dhis2ProtocolError,
    Dhis2TransportError,
)
from gateway.connectors.dhis2.jobs import run_async_import
from gateway.connectors.dhis2.reports import parse_tracker_report
from tests.dhis2.samples import load_sample

BASE = "https://dhis2.test"


@pytest.fixture
async def client() -> Dhis2Client:
    return Dhis2Client(BASE, auth=httpx.BasicAuth("admin", "district"))


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_system_info_and_errors(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    respx_mock.get("/api/system/info").mock(
        side_effect=[
            httpx.Response(200, json=load_sample("system-info-response.json")),
            httpx.Response(401, json=load_sample("DERIVED-webmessage-401-unauthorized.json")),
            httpx.Response(200, json={"no": "version"}),
            httpx.ConnectError("refused"),
        ]
    )
    info = await client.system_info()
    assert info.version == (2, 41)
    with pytest.raises(Dhis2HttpError) as refused:
        await client.system_info()
    assert refused.value.http_status == 401 and refused.value.dhis2_message == "Unauthorized"
    with pytest.raises(Dhis2ProtocolError):
        await client.system_info()
    with pytest.raises(Dhis2TransportError):
        await client.system_info()
    request = respx_mock.calls[0].request
    assert request.headers["authorization"].startswith("Basic ")


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_metadata_pages_follow_the_pager(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    page = load_sample("metadata-categoryCombos-paged-list.json")
    first = {**page, "pager": {"page": 1, "pageCount": 2, "total": 3, "pageSize": 2}}
    second = {**page, "pager": {"page": 2, "pageCount": 2, "total": 3, "pageSize": 2}}
    route = respx_mock.get("/api/categoryCombos").mock(
        side_effect=[httpx.Response(200, json=first), httpx.Response(200, json=second)]
    )
    pages = [
        (len(objs), number, count)
        async for objs, number, count in client.pages(
            "categoryCombos", fields="id,name", filters=("name:ne:x",), page_size=2
        )
    ]
    assert pages == [(2, 1, 2), (2, 2, 2)]
    assert route.calls[1].request.url.params["page"] == "2"
    assert route.calls[0].request.url.params["filter"] == "name:ne:x"


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_async_flow_polls_until_completed(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    added = load_sample("tracker-import-async-job-added-docs.json")
    job = added["response"]["id"]
    done = load_sample("tracker-job-notifications-completed.json")
    post = respx_mock.post("/api/tracker").mock(return_value=httpx.Response(200, json=added))
    respx_mock.get(f"/api/tracker/jobs/{job}").mock(
        side_effect=[httpx.Response(200, json=done[1:]), httpx.Response(200, json=done)]
    )
    respx_mock.get(f"/api/tracker/jobs/{job}/report").mock(
        return_value=httpx.Response(200, json=load_sample("tracker-job-report-ok-mixed-stats.json"))
    )
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)

    response = await run_async_import(
        client, {"events": []}, {"atomicMode": "OBJECT"}, poll_interval=0.2, timeout=10, sleep=sleep
    )
    assert parse_tracker_report(response.json()).stats["created"] == 1
    assert post.calls[0].request.url.params["async"] == "true" and naps == [0.2]


@respx.mock(base_url=BASE)
async def test_vanished_and_slow_jobs(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    added = load_sample("tracker-import-async-job-added-docs.json")
    job = added["response"]["id"]
    respx_mock.post("/api/tracker").mock(return_value=httpx.Response(200, json=added))
    notes = respx_mock.get(f"/api/tracker/jobs/{job}")
    notes.mock(return_value=httpx.Response(404, json=load_sample("DERIVED-tracker-job-report-404.json")))

    async def sleep(seconds: float) -> None:
        return None

    with pytest.raises(Dhis2JobLost):
        await run_async_import(client, {}, {}, poll_interval=0.1, timeout=1, sleep=sleep)
    running = load_sample("tracker-job-notifications-completed.json")[1:]
    notes.mock(return_value=httpx.Response(200, json=running))
    with pytest.raises(Dhis2JobTimeout):
        await run_async_import(client, {}, {}, poll_interval=0.1, timeout=0.5, sleep=sleep)
    refused = respx_mock.post("/api/tracker").mock(
        return_value=httpx.Response(403, json=load_sample("webmessage-403-forbidden-docs.json"))
    )
    response = await run_async_import(client, {}, {}, poll_interval=0.1, timeout=1, sleep=sleep)
    assert response.status_code == 403 and refused.called


@respx.mock(base_url=BASE, assert_all_called=True)
async def test_polling_obeys_retry_after(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    """A rate-limited poll waits as long as DHIS2 asked, not the next poll interval."""
    added = load_sample("tracker-import-async-job-added-docs.json")
    job = added["response"]["id"]
    done = load_sample("tracker-job-notifications-completed.json")
    respx_mock.post("/api/tracker").mock(return_value=httpx.Response(200, json=added))
    respx_mock.get(f"/api/tracker/jobs/{job}").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503),
            httpx.Response(200, json=done),
            httpx.Response(200, json=done),  # polled again after the report's 429
        ]
    )
    respx_mock.get(f"/api/tracker/jobs/{job}/report").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json=load_sample("tracker-job-report-ok-mixed-stats.json")),
        ]
    )
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)

    response = await run_async_import(client, {}, {}, poll_interval=0.2, timeout=60, sleep=sleep)
    assert response.status_code == 200
    assert naps == [7.0, pytest.approx(0.3), pytest.approx(3.0)]


@respx.mock(base_url=BASE)
async def test_a_wait_beyond_the_deadline_times_out(respx_mock: respx.MockRouter, client: Dhis2Client) -> None:
    """A Retry-After longer than the time left ends the wait now (the job is resubmitted later)."""
    added = load_sample("tracker-import-async-job-added-docs.json")
    respx_mock.post("/api/tracker").mock(return_value=httpx.Response(200, json=added))
    respx_mock.get(f"/api/tracker/jobs/{added['response']['id']}").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3600"})
    )
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)

    with pytest.raises(Dhis2JobTimeout):
        await run_async_import(client, {}, {}, poll_interval=0.2, timeout=60, sleep=sleep)
    assert naps == []
