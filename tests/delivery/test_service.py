"""The delivery engine end to end: store → outbox → queue → worker → a real HTTP destination."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway.connectors.base import Job
from gateway.delivery.admin import dead_letter_summary
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.config import DeliverySettings, DestinationConfig, SubscriptionFilter
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.store import GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM, KEPT_LINK_EXTENSION, Store, open_store
from tests.delivery.conftest import REDIS_URL
from tests.delivery.destination import LoopbackFhirServer, Request
from tests.delivery.helpers import eventually
from tests.delivery.workload import Workload

FAST = DeliverySettings(
    retry=RetryPolicy(initial_delay=0.01, multiplier=2, max_delay=0.05, jitter=0.1, max_age=3600),
    breaker=BreakerPolicy(min_calls=50, probe_interval=0.05),
    poll_interval=0.02,
    lease=10,
    drain_timeout=2,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    yield store
    store.close()


@pytest.fixture
def server() -> Iterator[LoopbackFhirServer]:
    server = LoopbackFhirServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL


ServiceFactory = Callable[..., DeliveryService]


@pytest.fixture
async def make_service(
    store: Store, queue_url: str, redis_prefix: str
) -> AsyncIterator[ServiceFactory]:
    made: list[DeliveryService] = []

    def make(destinations: list[DestinationConfig], settings: DeliverySettings = FAST) -> DeliveryService:
        service = DeliveryService.create(
            store=store,
            queue_url=queue_url,
            destinations=destinations,
            settings=settings,
            environ={"SHR_TOKEN": "test-token-value"},
            queue_prefix=redis_prefix,
        )
        made.append(service)
        return service

    yield make
    for service in made:
        if service._running:
            await service.stop()


def fhir(server: LoopbackFhirServer, name: str = "shr", **fields: object) -> DestinationConfig:
    return DestinationConfig.model_validate(
        {"name": name, "kind": "fhir", "base_url": server.url, "timeout": 2, **fields}
    )


async def test_every_change_reaches_the_destination_and_payloads_are_dropped(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    work = Workload.generate(patients=20, changes=300)
    work.apply(store, 0, 150)
    service = make_service([fhir(server, auth={"type": "bearer", "secret_env": "SHR_TOKEN"})])
    await service.start()
    work.apply(store, 150)
    service.notify()
    expected = work.expected(store)
    await eventually(lambda: server.snapshot() == expected)
    await eventually(lambda: _depth(service, "shr", 0))
    stats = await service.queue.stats("shr")
    assert (stats.dead, stats.in_flight, stats.retrying) == (0, 0, 0)
    assert stats.cursor == store.last_change_seq()
    assert stats.delivered_per_min > 0


async def _depth(service: DeliveryService, name: str, depth: int) -> bool:
    return (await service.queue.stats(name)).depth == depth


async def test_filters_choose_what_each_destination_gets(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    patients_only = fhir(server, "patients", filter=SubscriptionFilter(resource_types=("Patient",)))
    other = LoopbackFhirServer().start()
    try:
        high = fhir(
            other,
            "high",
            filter=SubscriptionFilter(
                resource_types=("Observation",),
                sources=("commcare-main",),
                criteria="Observation.subject.reference = 'Patient/p1'"
                " or Observation.subject.reference = 'Patient/p2'",
            ),
        )
        work = Workload.generate(patients=10, changes=120)
        work.apply(store)
        service = make_service([patients_only, high])
        await service.start()
        expected = work.expected(store)
        await eventually(lambda: len(server.snapshot()) == 10)
        wanted = {
            ref: r
            for ref, r in expected.items()
            if ref.startswith("Observation/") and r["subject"]["reference"] in ("Patient/p1", "Patient/p2")
        }
        await eventually(lambda: other.snapshot() == wanted)
        await eventually(lambda: _depth(service, "high", 0))
        assert set(server.snapshot()) == {ref for ref in expected if ref.startswith("Patient/")}
    finally:
        other.stop()


async def test_a_permanent_4xx_is_dead_lettered_and_replay_delivers_it_once_fixed(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    broken = {"Patient/p3"}

    def plan(index: int, request: Request) -> str:
        return "422" if request.ref in broken else "ok"

    server.plan = plan
    work = Workload.generate(patients=5, changes=5)
    work.apply(store)
    service = make_service([fhir(server)])
    await service.start()
    await eventually(lambda: len(server.snapshot()) == 4)
    await eventually(lambda: _dead(service, 1))
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="shr", reason="http_422"))
    assert letter.job.ref == "Patient/p3"
    assert letter.superseded_by is None  # the store has nothing newer: this one needs replaying
    assert letter.response is not None and letter.response.status == 422
    assert letter.request is not None and orjson.loads(letter.request.body)["id"] == "p3"
    assert letter.job.payload  # kept for replay
    broken.clear()  # the destination is fixed
    assert await service.admin.replay_matching(DeadLetterFilter(destination="shr")) == 1
    await eventually(lambda: server.snapshot() == work.expected(store))
    await eventually(lambda: _dead(service, 0))


@pytest.mark.parametrize("one_by_one", [False, True])
async def test_a_replayed_dead_letter_never_puts_an_older_version_over_a_newer_one(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory, one_by_one: bool
) -> None:
    """Version 1 dies (the server refused it), version 2 is delivered once the server is fixed:
    replaying version 1 would have put its temperature back. It is discarded instead (counted)."""
    broken = {"Observation/t1"}
    server.plan = lambda index, request: "422" if request.ref in broken else "ok"

    def write(value: float) -> None:
        with store.transaction() as tx:
            tx.update({"resourceType": "Observation", "id": "t1", "status": "final", "code": {"text": "temperature"},
                       "valueQuantity": {"value": value, "unit": "Cel"}})

    write(39.9)
    service = make_service([fhir(server)])
    await service.start()
    await eventually(lambda: _dead(service, 1))
    broken.clear()
    write(40.5)
    service.notify()
    await eventually(lambda: server.snapshot().get("Observation/t1", {}).get("valueQuantity", {}).get("value") == 40.5)
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="shr"))
    assert letter.job.version == 1
    # Listed and shown as superseded, so an operator sees it needs nothing done.
    assert letter.superseded_by == 2
    assert dead_letter_summary(letter)["superseded_by"] == 2
    assert (await service.admin.dead_letter(letter.job.id)).superseded_by == 2
    if one_by_one:
        assert await service.admin.replay(letter.job.id) == 1
    else:
        assert await service.admin.replay_matching(DeadLetterFilter(destination="shr")) == 1
    await eventually(lambda: _dead(service, 0))
    await eventually(lambda: _depth(service, "shr", 0))
    assert server.snapshot()["Observation/t1"]["valueQuantity"]["value"] == 40.5


@pytest.mark.parametrize("auth", [
    {"type": "api_token", "header": "X-Auth-Token", "scheme": "", "secret_env": "SHR_TOKEN"},
    {"type": "api_token", "header": "X-Auth-Token", "scheme": "Token", "secret_env": "SHR_TOKEN"},
    {"type": "basic", "username": "gw", "secret_env": "SHR_TOKEN"},
])
async def test_a_dead_letter_keeps_no_credential_in_a_custom_header_or_an_echoing_answer(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory, auth: dict[str, str]
) -> None:
    server.plan = lambda index, request: "422_echo"
    Workload.generate(patients=1, changes=1).apply(store)
    service = make_service([fhir(server, auth=auth)])
    await service.start()
    await eventually(lambda: _dead(service, 1))
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="shr"))
    assert letter.request is not None and letter.response is not None
    header = "x-auth-token" if auth["type"] == "api_token" else "authorization"
    assert letter.request.headers[header] == "[redacted]"
    assert "rejected request with headers" in letter.response.body and "***" in letter.response.body
    basic = base64.b64encode(b"gw:test-token-value").decode()
    for kept in (repr(letter.request), repr(letter.response), letter.detail or ""):
        assert "test-token-value" not in kept and basic not in kept


async def _dead(service: DeliveryService, count: int) -> bool:
    return (await service.queue.stats("shr")).dead == count


async def test_a_bug_dead_letters_with_its_traceback_instead_of_retrying(
    server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    service = make_service([fhir(server)])
    bad = Job(
        id="shr:1",
        destination="shr",
        seq=1,
        resource_type="Patient",
        resource_id="x",
        version=1,
        op="create",
        key="Patient/x",
        payload=b"[1, 2]",
        enqueued_at=service.clock.now(),
    )
    assert await service.queue.enqueue("shr", [bad], after=None, cursor=0)
    await service.start()
    await eventually(lambda: _dead(service, 1))
    letter = await service.queue.dead_letter("shr:1")
    assert letter is not None and letter.reason == "internal_error" and letter.attempts == 1
    assert letter.detail is not None and "ValueError" in letter.detail and "Traceback" in letter.detail
    assert server.requests == []


async def test_retries_stop_at_max_attempts(
    server: LoopbackFhirServer, store: Store, make_service: ServiceFactory
) -> None:
    server.plan = lambda index, request: "503"
    Workload.generate(patients=1, changes=1).apply(store)
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.002, max_attempts=4, max_age=None)
    service = make_service([fhir(server, retry=policy)])
    await service.start()
    await eventually(lambda: _dead(service, 1))
    [letter] = await service.admin.dead_letters(DeadLetterFilter())
    assert (letter.reason, letter.attempts) == ("retries_exhausted", 4)
    assert letter.detail is not None and "http_503" in letter.detail
    assert len(server.requests) == 4


async def test_pause_holds_jobs_and_resume_delivers_them(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    service = make_service([fhir(server)])
    await service.admin.pause("shr")
    await service.start()
    Workload.generate(patients=3, changes=3).apply(store)
    service.notify()
    await eventually(lambda: _depth(service, "shr", 3))
    stats = await service.queue.stats("shr")
    assert stats.paused and server.requests == []
    await service.admin.resume("shr")
    await eventually(lambda: len(server.snapshot()) == 3)


async def test_a_dead_destination_does_not_slow_down_a_healthy_one(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    dead = LoopbackFhirServer(plan=lambda index, request: "timeout", hang=5).start()
    try:
        work = Workload.generate(patients=30, changes=200)
        work.apply(store)
        service = make_service([fhir(dead, "dead", concurrency=2), fhir(server, "healthy", concurrency=2)])
        await service.start()
        await eventually(lambda: server.snapshot() == work.expected(store), timeout=10)
        assert len(dead.snapshot()) == 0
    finally:
        dead.stop()


async def test_graceful_shutdown_releases_in_flight_jobs_untried(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    server.hang = 3
    server.plan = lambda index, request: "timeout" if index == 0 else "ok"
    Workload.generate(patients=1, changes=1).apply(store)
    settings = FAST.model_copy(update={"drain_timeout": 0.2})
    service = make_service([fhir(server, timeout=10)], settings)
    await service.start()
    await eventually(lambda: len(server.requests) == 1)
    await service.stop()
    second = make_service([fhir(server, timeout=10)], settings)
    stats = await second.queue.stats("shr")
    assert (stats.depth, stats.in_flight, stats.retrying) == (1, 0, 0)
    await second.start()
    await eventually(lambda: len(server.snapshot()) == 1)


async def test_two_workers_share_a_redis_queue_and_a_postgresql_store(
    pg_schema_url: str, server: LoopbackFhirServer, redis_prefix: str
) -> None:
    store = open_store(pg_schema_url)
    work = Workload.generate(patients=50, changes=600, seed=9)
    work.apply(store, 0, 300)
    destination = fhir(server, concurrency=4, coalesce=False)
    services = [
        DeliveryService.create(
            store=store,
            queue_url=REDIS_URL,
            destinations=[destination],
            settings=FAST,
            environ={},
            queue_prefix=redis_prefix,
        )
        for _ in range(2)
    ]
    try:
        for service in services:
            await service.start()
        work.apply(store, 300)
        for service in services:
            service.notify()
        await eventually(lambda: len(server.applied) >= 600, timeout=30)
        await eventually(lambda: _depth(services[0], "shr", 0))
    finally:
        for service in services:
            await service.stop()
        store.close()
    seqs = [write.seq for write in server.applied]
    assert sorted(seqs) == list(range(1, 601))  # every change once: racing outboxes queued nothing twice
    per_patient: dict[str, list[int]] = {}
    for write in server.applied:
        per_patient.setdefault(work.patient_of[write.ref], []).append(write.seq)
    assert all(order == sorted(order) for order in per_patient.values())
    assert {ref for ref, _ in server.applied_counts()} == set(work.patient_of)


async def test_a_destination_data_policy_sends_only_the_data_it_shows(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    """A district's EMR as a destination: its Patients and their data, nobody else's (issue 11)."""
    resources: list[dict[str, object]] = [
        {"resourceType": "Organization", "id": "dist-a"},
        {"resourceType": "Organization", "id": "hc-a", "partOf": {"reference": "Organization/dist-a"}},
        {"resourceType": "Organization", "id": "dist-b"},
    ]
    for i, org in enumerate(["hc-a", "dist-b", "hc-a", "dist-b"]):
        resources.append({"resourceType": "Patient", "id": f"p{i}", "managingOrganization": {
            "reference": f"Organization/{org}"}})
        resources.append({"resourceType": "Observation", "id": f"o{i}", "status": "final",
                          "code": {"text": "x"}, "subject": {"reference": f"Patient/p{i}"}})
    with store.transaction() as tx:
        for resource in resources:
            tx.update(resource)
    district = fhir(server, "district", filter=SubscriptionFilter(policy={"organizations": ["Organization/dist-a"]}))
    service = make_service([district])
    await service.start()
    wanted = {"Organization/dist-a", "Organization/hc-a", "Organization/dist-b",
              "Patient/p0", "Observation/o0", "Patient/p2", "Observation/o2"}
    await eventually(lambda: set(server.snapshot()) == wanted)
    with store.transaction() as tx:
        tx.delete("Observation", "o0")
        tx.update({"resourceType": "Observation", "id": "o1", "status": "amended", "code": {"text": "x"},
                   "subject": {"reference": "Patient/p1"}})
    service.notify()
    await eventually(lambda: set(server.snapshot()) == wanted - {"Observation/o0"})
    await eventually(lambda: _depth(service, "district", 0))
    assert "Observation/o1" not in server.snapshot()


async def test_a_destination_data_policy_gets_no_golden_records_nor_matcher_links(
    store: Store, server: LoopbackFhirServer, make_service: ServiceFactory
) -> None:
    """As a client with the same policy: a golden record joins Patients the policy hides, and the
    matcher's links name them (tests/api/test_data_policy.py)."""
    def kept(kind: str, target: str) -> dict[str, object]:
        return {"other": {"reference": f"Patient/{target}"}, "type": kind,
                "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": "score 22.0"}]}

    own = {"other": {"reference": "Patient/p9"}, "type": "seealso"}
    with store.transaction() as tx:
        tx.update({"resourceType": "Organization", "id": "dist-a"})
        tx.update({"resourceType": "Organization", "id": "dist-b"})
        tx.update({"resourceType": "Patient", "id": "pa", "managingOrganization": {"reference": "Organization/dist-a"},
                   "link": [kept("seealso", "pb"), kept("refer", "gold"), own]})
        tx.update({"resourceType": "Patient", "id": "pb", "managingOrganization": {"reference": "Organization/dist-b"}})
        tx.update({"resourceType": "Patient", "id": "gold",
                   "managingOrganization": {"reference": "Organization/dist-a"},
                   "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]},
                   "link": [kept("seealso", "pa"), kept("seealso", "pb")]})
    district = fhir(server, "district", filter=SubscriptionFilter(policy={"organizations": ["Organization/dist-a"]}))
    service = make_service([district])
    await service.start()
    await eventually(lambda: _depth(service, "district", 0))
    await eventually(lambda: set(server.snapshot()) == {"Organization/dist-a", "Organization/dist-b", "Patient/pa"})
    assert server.snapshot()["Patient/pa"]["link"] == [own]


def test_a_destination_policy_is_checked_when_the_configuration_loads() -> None:
    with pytest.raises(ValueError, match="not a Organization reference"):
        SubscriptionFilter(policy={"organizations": ["dist-a"]})
    with pytest.raises(ValueError, match="deidentify is for API clients"):
        SubscriptionFilter(policy={"deidentify": True})
