"""The webhook connector against a respx-mocked endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
import respx

from gateway.clock import ManualClock
from gateway.connectors.base import Job, Permanent, Retry, Success
from gateway.connectors.webhook import WebhookConnector
from gateway.delivery.http import destination_client

URL = "https://hooks.example.org/in"


def job(seq: int, op: str = "create", rid: str = "o1") -> Job:
    payload = b"" if op == "delete" else orjson.dumps({"resourceType": "Observation", "id": rid})
    return Job(
        id=f"hook:{seq}",
        destination="hook",
        seq=seq,
        resource_type="Observation",
        resource_id=rid,
        version=2,
        op=op,  # type: ignore[arg-type]
        key="Patient/p",
        payload=payload,
    )


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=True) as mocked:
        yield mocked


def connector() -> WebhookConnector:
    return WebhookConnector(destination_client(timeout=5, concurrency=1), URL, ManualClock())


async def test_posts_the_resource_with_idempotency_headers(router: respx.MockRouter) -> None:
    route = router.post(URL).respond(202)
    hook = connector()
    assert await hook.deliver([job(7)]) == [Success()]
    sent = route.calls.last.request
    assert orjson.loads(sent.content) == {"resourceType": "Observation", "id": "o1"}
    assert sent.headers["x-gateway-delivery-id"] == "hook:7"
    assert sent.headers["x-gateway-event"] == "create"
    assert sent.headers["x-gateway-resource"] == "Observation/o1/_history/2"
    await hook.aclose()


async def test_a_delete_posts_a_tombstone(router: respx.MockRouter) -> None:
    route = router.post(URL).respond(200)
    hook = connector()
    await hook.deliver([job(8, op="delete")])
    assert orjson.loads(route.calls.last.request.content) == {"resourceType": "Observation", "id": "o1"}
    assert route.calls.last.request.headers["x-gateway-event"] == "delete"
    await hook.aclose()


async def test_several_jobs_post_one_bundle_and_share_the_outcome(router: respx.MockRouter) -> None:
    route = router.post(URL).mock(side_effect=[httpx.Response(500), httpx.Response(400)])
    hook = connector()
    jobs = [job(1, rid="a"), job(2, op="delete", rid="b")]
    assert await hook.deliver(jobs) == [Retry(None, "http_500")] * 2
    outcomes = await hook.deliver(jobs)
    assert all(isinstance(o, Permanent) and o.reason == "http_400" for o in outcomes)
    bundle = orjson.loads(route.calls.last.request.content)
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "DELETE"]
    await hook.aclose()
