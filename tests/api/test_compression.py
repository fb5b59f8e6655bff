"""Response compression: large answers gzip-encoded for clients that accept it."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.api.compression import accepts_gzip
from gateway.settings import Settings
from gateway.store import open_store
from tests.conftest import ApiHarness, make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


async def _raw(client: httpx.AsyncClient, url: str, encoding: str | None,
               **more: str) -> tuple[httpx.Response, bytes]:
    """The answer and its body as sent on the wire (httpx would inflate ``.content``)."""
    headers = {"Accept-Encoding": encoding} if encoding is not None else {}
    headers.update(more)
    async with client.stream("GET", url, headers=headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, raw


async def _observations(api: ApiHarness, count: int) -> None:
    await api.client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    for n in range(count):
        observation = {
            "resourceType": "Observation", "id": f"o{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6",
                                 "display": "Systolic blood pressure"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"2026-11-{n % 28 + 1:02d}",
            "valueQuantity": {"value": 120 + n, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org",
                              "code": "mm[Hg]"},
        }
        assert (await api.client.put(f"/fhir/Observation/o{n}", json=observation)).status_code == 201


async def test_a_search_page_is_gzipped_for_a_client_that_accepts_it(api: ApiHarness) -> None:
    await _observations(api, 20)
    plain, identity = await _raw(api.client, "/fhir/Observation?subject=Patient/p1&_count=20", "identity")
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == len(identity)
    packed, wire = await _raw(api.client, "/fhir/Observation?subject=Patient/p1&_count=20", "gzip, deflate")
    assert packed.status_code == 200 and packed.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(wire)
    assert packed.headers["content-type"].startswith("application/fhir+json")
    page, same = orjson.loads(gzip.decompress(wire)), orjson.loads(identity)
    assert len(page["entry"]) == 20
    # The same page but for the Bundle's own id and time, which every search answer makes anew.
    for bundle in (page, same):
        bundle.pop("id"), bundle["meta"].pop("lastUpdated", None)
    assert page == same
    assert len(wire) * 5 < len(identity)


@pytest.mark.parametrize(
    ("header", "compressed"),
    [("gzip", True), ("GZIP;q=0.5", True), ("x-gzip", True), ("*", True), ("br, gzip;q=1.0", True),
     ("identity", False), ("gzip;q=0", False), ("gzip; q=0.000", False), ("*, gzip;q=0", False),
     ("deflate", False), ("gzip;q=bad", False), ("", False)],
)
async def test_accept_encoding_is_read_with_its_weights(api: ApiHarness, header: str, compressed: bool) -> None:
    assert accepts_gzip(header) is compressed
    response, wire = await _raw(api.anonymous(), "/fhir/metadata", header)
    assert response.status_code == 200
    assert ("content-encoding" in response.headers) is compressed
    assert orjson.loads(gzip.decompress(wire) if compressed else wire)["resourceType"] == "CapabilityStatement"


async def test_small_answers_and_errors_below_the_minimum_are_sent_as_they_are(api: ApiHarness) -> None:
    await api.client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    read, wire = await _raw(api.client, "/fhir/Patient/p1", "gzip")
    assert read.status_code == 200 and "content-encoding" not in read.headers
    assert orjson.loads(wire)["id"] == "p1"
    missing, _ = await _raw(api.client, "/fhir/Patient/nobody", "gzip")
    assert missing.status_code == 404 and "content-encoding" not in missing.headers


@pytest.mark.parametrize("minimum", [None, 64])
async def test_the_minimum_size_is_a_setting_and_null_turns_it_off(tmp_path: Path, minimum: int | None) -> None:
    settings = Settings(store_url=f"sqlite:///{tmp_path}/api.db", allowed_hosts=["gateway.test"],
                        rate_limit=MACHINE_SPEED_LIMITS, gzip_min_bytes=minimum)
    store = open_store(settings.store_url)
    app = create_app(settings, store=store)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {make_token(store, ('system/*.rs',))}"},
        ) as client:
            response, wire = await _raw(client, "/fhir/metadata", "gzip")
            assert response.status_code == 200
            assert ("content-encoding" in response.headers) is (minimum is not None)
            # With a low minimum an error is compressed like any answer, and stays an OperationOutcome.
            missing, raw = await _raw(client, "/fhir/Patient/nobody", "gzip")
            assert missing.status_code == 404
            assert ("content-encoding" in missing.headers) is (minimum is not None)
            outcome = gzip.decompress(raw) if minimum is not None else raw
            assert orjson.loads(outcome)["resourceType"] == "OperationOutcome"
    finally:
        store.close()


async def test_repeated_accept_encoding_lines_are_read_as_one_list(api: ApiHarness) -> None:
    client = api.anonymous()
    request = client.build_request("GET", "/fhir/metadata")
    request.headers = httpx.Headers([("accept-encoding", "br"), ("accept-encoding", "gzip")])
    response = await client.send(request, stream=True)
    try:
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    finally:
        await response.aclose()
