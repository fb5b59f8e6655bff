"""The ``client-registry`` destination over HTTP against the OpenCR stand-in, on both store backends.

Patients written to the store are delivered by the delivery engine (retries, dead letters)
to ``registry_sandbox``; the national id (CRUID) comes back as an identifier on the Patient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.connectors.dhis2.writeback import provenance_id
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.identity.golden import kept_link
from gateway.store import KEPT_IDENTIFIER_TYPE, Store
from registry_sandbox import ClientRegistry
from tests.delivery.helpers import eventually
from tests.support.live_server import LiveServer

NATIONAL = "urn:example:national-id"
FAST = DeliverySettings(
    retry=RetryPolicy(initial_delay=0.01, multiplier=2, max_delay=0.05, jitter=0.1, max_attempts=4),
    breaker=BreakerPolicy(min_calls=1000, probe_interval=0.05),
    poll_interval=0.02,
    lease=30,
    drain_timeout=2,
)


@pytest.fixture
def registry() -> ClientRegistry:
    return ClientRegistry(match_systems=frozenset({NATIONAL}))


@pytest.fixture
def server(registry: ClientRegistry) -> Iterator[LiveServer]:
    with LiveServer(registry.app()) as live:
        yield live


def destination(server: LiveServer, **options: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({
        "name": "cr", "kind": "client-registry", "base_url": server.url + "/fhir", "timeout": 5,
        "auth": {"type": "basic", "username": "gateway", "secret_env": "CR_PASSWORD"},
        "filter": {"resource_types": ["Patient"]},
        "options": {"national_id_system": "https://cr.example.org/CRUID", **options},
    })  # fmt: skip


@pytest.fixture
async def deliver(store: Store, tmp_path: Path) -> AsyncIterator[Any]:
    services: list[DeliveryService] = []

    async def start(dest: DestinationConfig) -> DeliveryService:
        service = DeliveryService.create(
            store=store, queue_url=f"sqlite:///{tmp_path}/queue.db", destinations=[dest],
            settings=FAST, environ={"CR_PASSWORD": "cr-secret"},
        )  # fmt: skip
        services.append(service)
        await service.start()
        return service

    yield start
    for service in services:
        await service.stop()


def patient(pid: str, given: str, family: str, birth: str, *ids: tuple[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth,
                            "name": [{"given": [given], "family": family}]}
    if ids:
        body["identifier"] = [{"system": s, "value": v} for s, v in ids]
    return body


def put(store: Store, resource: dict[str, Any]) -> None:
    with store.transaction() as tx:
        tx.update(resource, skip_unchanged=True)


def current(store: Store, pid: str) -> dict[str, Any]:
    found = store.read("Patient", pid)
    assert found is not None
    return dict(orjson.loads(found.content))


def cruid_on(store: Store, pid: str) -> str | None:
    values = [i["value"] for i in current(store, pid).get("identifier") or []
              if i.get("system") == "https://cr.example.org/CRUID"]
    return values[0] if values else None


async def test_register_writes_the_national_id_back_and_links_the_same_person(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    put(store, patient("a", "Aline", "Uwase", "1990-04-02", (NATIONAL, "1199080012345678")))
    put(store, patient("b", "Alinne", "Uwase", "1990-04-02", (NATIONAL, "1199080012345678")))
    put(store, patient("c", "Eric", "Habimana", "1985-01-09"))
    service = await deliver(destination(server))
    service.notify()
    await eventually(lambda: all(cruid_on(store, pid) for pid in "abc"), timeout=20)
    a, b, c = (cruid_on(store, pid) for pid in "abc")
    assert a == b != c  # one person (same national id), one other
    assert set(registry.registry.golden) == {a, c}
    written = [i for i in current(store, "a")["identifier"] if i["system"] == "https://cr.example.org/CRUID"]
    assert written[0]["type"]["coding"][0]["system"] == KEPT_IDENTIFIER_TYPE
    version = current(store, "a")["meta"]["versionId"]
    assert store.read("Provenance", provenance_id("cr", "Patient/a", int(version))) is not None
    # The registry got the gateway's id as an identifier, and never the written-back CRUID.
    sent = [r for r in registry.registry.records.values() if any(i["value"] == "a" for i in r["identifier"])]
    assert len(sent) == 1
    assert all(i["system"] != "https://cr.example.org/CRUID" for i in sent[0]["identifier"])
    # The write-back's own version is not registered again; the queue drains.
    await eventually(lambda: _drained(service, store), timeout=20)
    assert len(registry.registry.records) == 3


async def test_a_retry_after_a_lost_answer_creates_no_second_registry_patient(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    registry.fail_next(504, when="after")  # the registry stored it, the answer was lost
    put(store, patient("a", "Aline", "Uwase", "1990-04-02"))
    service = await deliver(destination(server))
    service.notify()
    await eventually(lambda: cruid_on(store, "a") is not None, timeout=20)
    assert len(registry.registry.records) == 1
    assert [m for m, p in registry.requests if p == "/fhir/Patient"].count("POST") == 2
    # An edited Patient updates the registry's record rather than adding one.
    body = current(store, "a")
    put(store, {**body, "gender": "male", "meta": {}})
    service.notify()
    await eventually(lambda: next(iter(registry.registry.records.values()))["gender"] == "male", timeout=20)
    assert len(registry.registry.records) == 1


async def test_lookup_mode_asks_the_registry_and_registers_nothing(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    known = registry.registry.create(patient("x", "Diane", "Mukamana", "2001-07-15", (NATIONAL, "42")))
    other = registry.registry.create(patient("y", "Keza", "Ingabire", "2003-02-11"))
    cruid, other_cruid = registry.registry.golden_of[known["id"]], registry.registry.golden_of[other["id"]]
    put(store, patient("p", "Diane", "Mukamana", "2001-07-15", (NATIONAL, "42")))  # PDQm by national id
    put(store, patient("q", "Keza", "Ingabire", "2003-02-11"))  # no id: $match (a probable match only)
    put(store, patient("r", "Nobody", "Known", "1999-09-09", (NATIONAL, "7")))
    service = await deliver(destination(server, mode="lookup", lookup_identifier_systems=[NATIONAL]))
    service.notify()
    await eventually(lambda: cruid_on(store, "p") is not None and _drained(service, store), timeout=20)
    assert cruid_on(store, "p") == cruid
    assert cruid_on(store, "q") is None and cruid_on(store, "r") is None  # probable only / unknown: nothing
    assert len(registry.registry.records) == 2 and other_cruid
    paths = {p for _, p in registry.requests}
    assert "/fhir/Patient/$match" in paths
    assert ("POST", "/fhir/Patient") not in registry.requests


async def test_registry_down_retries_then_dead_letters(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    registry.fail_next(503, times=100)
    put(store, patient("a", "Aline", "Uwase", "1990-04-02"))
    service = await deliver(destination(server))
    service.notify()

    async def dead() -> bool:
        return bool(await service.admin.dead_letters(DeadLetterFilter(destination="cr")))

    await eventually(dead, timeout=20)
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="cr"))
    assert letter.reason == "retries_exhausted" and letter.attempts == 4
    assert [p for m, p in registry.requests].count("/fhir/Patient") == 4
    assert cruid_on(store, "a") is None and registry.registry.records == {}


async def test_wrong_credentials_are_a_dead_letter_without_retrying(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    registry.password = "changed"
    put(store, patient("a", "Aline", "Uwase", "1990-04-02"))
    service = await deliver(destination(server))
    service.notify()

    async def dead() -> bool:
        return bool(await service.admin.dead_letters(DeadLetterFilter(destination="cr")))

    await eventually(dead, timeout=20)
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="cr"))
    assert letter.reason == "http_401" and letter.attempts == 1
    assert "cr-secret" not in str(letter.request)


async def _drained(service: DeliveryService, store: Store) -> bool:
    stats = await service.queue.stats("cr")
    return stats.depth == 0 and stats.cursor == store.last_change_seq()


def test_a_bad_option_is_refused_when_the_settings_load() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    with pytest.raises(ValidationError, match=r"destination cr: options.mode"):
        Settings(destinations=[{"name": "cr", "kind": "client-registry", "base_url": "http://cr.example.org/fhir",
                                "options": {"mode": "merge"}}])


async def test_lookup_by_match_writes_back_only_a_certain_match(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    known = registry.registry.create(patient("x", "Diane", "Mukamana", "2001-07-15", (NATIONAL, "42")))
    cruid = registry.registry.golden_of[known["id"]]
    put(store, patient("p", "Diane", "Mukamana", "2001-07-15", (NATIONAL, "42")))
    service = await deliver(destination(server, mode="lookup", lookup=["match"]))
    service.notify()
    await eventually(lambda: cruid_on(store, "p") is not None, timeout=20)
    assert cruid_on(store, "p") == cruid
    assert ("GET", "/fhir/Patient") not in registry.requests  # no PDQm search was configured


async def test_the_identity_matchers_links_are_not_sent_to_the_registry(
    store: Store, registry: ClientRegistry, server: LiveServer, deliver: Any
) -> None:
    """A Patient identity matching linked carries ``refer`` to its gateway golden record and
    ``seealso`` to the person's other record: ids the registry does not hold. They were sent:
    OpenCR's HAPI refuses unknown references (a dead letter), and a registry that kept them would
    have answered the gateway's own golden id as the record's first ``refer`` link (the CRUID)."""
    body = patient("a", "Aline", "Uwase", "1990-04-02")
    body["link"] = [kept_link("seealso", "b", "score 20.1"), kept_link("refer", "golden-of-a", "golden record")]
    put(store, body)
    service = await deliver(destination(server))
    service.notify()
    await eventually(lambda: cruid_on(store, "a") is not None, timeout=20)
    assert (await service.queue.stats("cr")).dead == 0
    cruid = cruid_on(store, "a")
    assert cruid in registry.registry.golden and cruid != "golden-of-a"
    (record,) = registry.registry.records.values()
    assert record["link"] == [{"other": {"reference": f"Patient/{cruid}"}, "type": "refer"}]
