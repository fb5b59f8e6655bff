"""The FHIR server connector against a respx-mocked server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
import respx

from gateway.clock import ManualClock
from gateway.connectors.base import Job, Permanent, Retry, Success
from gateway.connectors.fhir_server import FhirServerConnector
from gateway.delivery.http import destination_client

BASE = "https://shr.example.org/fhir"


def job(seq: int = 1, op: str = "update", rid: str = "p1", resource: dict[str, object] | None = None) -> Job:
    body = resource or {
        "resourceType": "Patient",
        "id": rid,
        "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z", "source": "commcare"},
        "identifier": [{"system": "urn:cc|case", "value": "abc,1"}],
    }
    return Job(
        id=f"shr:{seq}",
        destination="shr",
        seq=seq,
        resource_type="Patient",
        resource_id=rid,
        version=3,
        op=op,  # type: ignore[arg-type]
        key=f"Patient/{rid}",
        payload=b"" if op == "delete" else orjson.dumps(body),
    )


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True) as mocked:
        yield mocked


@pytest.fixture
async def connector():
    client = destination_client(timeout=5.0, concurrency=2, auth=httpx.BasicAuth("u", "secret-pw"))
    conn = FhirServerConnector(client, BASE + "/", ManualClock())
    yield conn
    await conn.aclose()


async def test_put_to_the_deterministic_id_without_server_meta(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    route = router.put(f"{BASE}/Patient/p1").respond(
        201, headers={"Location": f"{BASE}/Patient/p1/_history/1"}
    )
    [outcome] = await connector.deliver([job()])
    assert outcome == Success(detail=f"{BASE}/Patient/p1/_history/1")
    sent = route.calls.last.request
    body = orjson.loads(sent.content)
    assert body["meta"] == {"source": "commcare"}
    assert sent.headers["content-type"] == "application/fhir+json"
    assert sent.headers["x-request-id"] == "shr:1"
    assert sent.headers["x-gateway-version"] == "3"


async def test_identifier_mode_sends_a_conditional_update(router: respx.MockRouter) -> None:
    client = destination_client(timeout=5.0, concurrency=1)
    connector = FhirServerConnector(client, BASE, ManualClock(), mode="identifier")
    route = router.put(url__startswith=f"{BASE}/Patient?identifier=").respond(200)
    assert await connector.deliver([job()]) == [Success(detail=None)]
    query = route.calls.last.request.url.params["identifier"]
    assert query == "urn:cc\\|case|abc\\,1"
    await connector.aclose()


@pytest.mark.parametrize("status", [200, 204, 404, 410])
async def test_delete_succeeds_when_gone(
    router: respx.MockRouter, connector: FhirServerConnector, status: int
) -> None:
    router.delete(f"{BASE}/Patient/p1").respond(status)
    [outcome] = await connector.deliver([job(op="delete")])
    assert isinstance(outcome, Success)


async def test_a_rejected_resource_is_permanent_with_the_exchange_kept(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    router.put(f"{BASE}/Patient/p1").respond(422, json={"resourceType": "OperationOutcome", "issue": []})
    [outcome] = await connector.deliver([job()])
    assert isinstance(outcome, Permanent) and outcome.reason == "http_422"
    assert outcome.request is not None and outcome.response is not None
    assert outcome.request.headers["authorization"] == "[redacted]"
    assert "secret-pw" not in repr(outcome)
    assert orjson.loads(outcome.request.body)["id"] == "p1"
    assert orjson.loads(outcome.response.body)["resourceType"] == "OperationOutcome"


async def test_transient_failures_retry(router: respx.MockRouter, connector: FhirServerConnector) -> None:
    router.put(f"{BASE}/Patient/p1").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "30"}),
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
        ]
    )
    outcomes = [(await connector.deliver([job()]))[0] for _ in range(3)]
    assert outcomes == [
        Retry(30.0, "http_503", throttle=True),
        Retry(None, "connection"),
        Retry(None, "timeout"),
    ]


async def test_several_jobs_go_as_one_batch_bundle(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    reply = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"response": {"status": "200 OK"}},
            {"response": {"status": "404 Not Found"}},
            {"response": {"status": "503"}},
            {"response": {"status": "400 Bad Request", "outcome": {"resourceType": "OperationOutcome"}}},
        ],
    }
    route = router.post(BASE).respond(200, json=reply)
    jobs = [job(1, rid="a"), job(2, op="delete", rid="b"), job(3, rid="c"), job(4, rid="d")]
    outcomes = await connector.deliver(jobs)
    bundle = orjson.loads(route.calls.last.request.content)
    assert bundle["type"] == "batch"
    assert [e["request"] for e in bundle["entry"]] == [
        {"method": "PUT", "url": "Patient/a"},
        {"method": "DELETE", "url": "Patient/b"},
        {"method": "PUT", "url": "Patient/c"},
        {"method": "PUT", "url": "Patient/d"},
    ]
    assert isinstance(outcomes[0], Success) and isinstance(outcomes[1], Success)
    assert outcomes[2] == Retry(None, "http_503")
    assert isinstance(outcomes[3], Permanent) and outcomes[3].reason == "http_400"


async def test_a_malformed_batch_response_is_permanent(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    router.post(BASE).respond(200, json={"resourceType": "Bundle", "entry": []})
    outcomes = await connector.deliver([job(1, rid="a"), job(2, rid="b")])
    assert all(isinstance(o, Permanent) and o.reason == "bad_batch_response" for o in outcomes)


async def test_a_failed_batch_request_fails_every_job(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    router.post(BASE).respond(502)
    assert await connector.deliver([job(1, rid="a"), job(2, rid="b")]) == [Retry(None, "http_502")] * 2


async def test_decimals_go_to_the_server_as_the_client_wrote_them(
    router: respx.MockRouter, connector: FhirServerConnector
) -> None:
    payload = (b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"w"},'
               b'"valueQuantity":{"value":5.40},"component":[{"code":{"text":"c"},"valueQuantity":{"value":1.50E2}}]}')

    def observation(seq: int) -> Job:
        return Job(id=f"shr:{seq}", destination="shr", seq=seq, resource_type="Observation", resource_id=f"o{seq}",
                   version=1, op="update", key=f"Observation/o{seq}", payload=payload.replace(b"o1", b"o%d" % seq))

    put = router.put(f"{BASE}/Observation/o1").respond(201)
    [outcome] = await connector.deliver([observation(1)])
    assert isinstance(outcome, Success)
    assert b'"value":5.40' in put.calls.last.request.content and b'"value":1.50E2' in put.calls.last.request.content
    reply = {"resourceType": "Bundle", "type": "batch-response", "entry": [{"response": {"status": "200 OK"}}] * 2}
    post = router.post(BASE).respond(200, json=reply)
    await connector.deliver([observation(2), observation(3)])
    assert post.calls.last.request.content.count(b'"value":5.40') == 2
