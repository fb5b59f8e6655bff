"""SSRF: where a subscription's handshake and notifications may not go, however the address is spelled,
and wherever its host resolves when something is sent (not only when the subscription was created).

Lookups go through a stand-in resolver (``endpoints.resolve_host`` replaced), so a name can
resolve to the metadata address without a network; ``localhost`` is that name, since httpx
really connects to it (the subscriber stand-in listens on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.delivery import DeadLetterFilter
from gateway.delivery.http import destination_client
from gateway.store import open_store
from gateway.subscriptions import SubscriptionSettings
from gateway.subscriptions import endpoints as endpoints_module
from gateway.subscriptions.endpoints import EndpointGuard, address_refusal, literal_address
from gateway.subscriptions.pinning import pin_client
from tests.delivery.helpers import eventually
from tests.subscriptions.harness import Harness, fast_settings, subscription

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.169.254./",
    "https://169.254.169.254:8443/hook",
    "http://[fe80::1]/hook",
    "http://[fe80::1%25eth0]/hook",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://0.0.0.0:8080/hook",
    "http://0/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",
    "http://[ff02::1]/hook",
    "http://255.255.255.255/hook",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[::ffff:0.0.0.0]/",
]
PRIVATE = [
    "http://127.0.0.1:9/hook", "http://127.1/hook", "http://2130706433/hook", "http://localhost:9/hook",
    "http://api.localhost/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://10.0.0.7/hook",
    "http://172.16.0.1/hook", "http://192.168.1.10/hook", "http://100.64.0.1/hook", "http://[fd12:3456::1]/hook",
]


def harness_on(tmp_path: Path, **subscriptions: Any) -> Any:
    url = f"sqlite:///{tmp_path}/store.db"

    class _Running:
        async def __aenter__(self) -> Harness:
            self.store = open_store(url)
            self.harness = Harness(fast_settings(url, f"sqlite:///{tmp_path}/queue.db", **subscriptions), self.store)
            return await self.harness.__aenter__()

        async def __aexit__(self, *exc: object) -> None:
            try:
                await self.harness.__aexit__(*exc)
            finally:
                self.store.close()

    return _Running()


@pytest.fixture
def resolving(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names to the addresses the stand-in resolver gives them (others do not resolve)."""
    table: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"no such name: {host}")
        return table[host]

    monkeypatch.setattr(endpoints_module, "resolve_host", resolve)
    return table


def _refused(answer: httpx.Response, endpoint: str) -> None:
    assert answer.status_code == 400, (endpoint, answer.text)
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"], issue
    assert "subscriptions may not notify" in issue["diagnostics"], issue


# -- at create and update --------------------------------------------------------------------


async def test_link_local_unspecified_multicast_and_broadcast_are_refused_however_spelled(tmp_path: Path) -> None:
    async with harness_on(tmp_path) as h:
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        for endpoint in ALWAYS_REFUSED:
            _refused(await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint)), endpoint)
        kept = await owner.post("/fhir/Subscription", json=subscription("new-patient", h.endpoint("emr")))
        assert kept.status_code == 201 and kept.json()["status"] == "active", kept.text
        moved = subscription("new-patient", "http://2852039166/")
        answer = await owner.put(f"/fhir/Subscription/{kept.json()['id']}", json={**moved, "id": kept.json()["id"]})
        _refused(answer, "update")
        assert h.sandbox.receiver("emr").handshakes == 1
    assert "link-local" in answer.json()["issue"][0]["diagnostics"]


async def test_loopback_subscriptions_still_work_by_default(tmp_path: Path, resolving: dict[str, list[str]]) -> None:
    resolving["localhost"] = ["127.0.0.1"]
    async with harness_on(tmp_path) as h:
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        for endpoint in (h.endpoint("emr"), h.endpoint("emr").replace("127.0.0.1", "localhost")):
            answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
            assert answer.status_code == 201 and answer.json()["status"] == "active", answer.text
        assert h.sandbox.receiver("emr").handshakes == 2
        for endpoint in ("http://10.0.0.7/hook", "http://192.168.1.10/hook", "http://[fd12:3456::1]/hook"):
            answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
            assert answer.status_code == 201, answer.text  # allowed; the handshake just finds nobody


async def test_block_private_networks_refuses_loopback_and_private_unless_listed(tmp_path: Path) -> None:
    async with harness_on(tmp_path, block_private_networks=True) as h:
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        for endpoint in PRIVATE + ALWAYS_REFUSED[:3]:
            _refused(await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint)), endpoint)
        assert h.sandbox.receiver("emr").handshakes == 0
    async with harness_on(tmp_path, block_private_networks=True, endpoint_hosts=["127.0.0.1"]) as h:
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", h.endpoint("emr")))
        assert answer.status_code == 201 and answer.json()["status"] == "active", answer.text


# -- at send time ----------------------------------------------------------------------------


async def test_a_handshake_to_a_name_resolving_to_the_metadata_address_is_not_sent(
    tmp_path: Path, resolving: dict[str, list[str]],
) -> None:
    resolving["localhost"] = ["127.0.0.1", "169.254.169.254"]
    async with harness_on(tmp_path) as h:
        answer = await _handshake_refused(h, "localhost")
        assert "169.254" not in answer.text


async def _handshake_refused(h: Harness, host: str) -> httpx.Response:
    """Subscribe to the stand-in by ``host``; the answer, after checking the handshake was refused."""
    owner = h.client("system/Subscription.cruds", "system/Patient.rs")
    endpoint = h.endpoint("emr").replace("127.0.0.1", host)
    answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["status"] == "error"
    assert created["error"].startswith("handshake failed: endpoint_refused: the endpoint host resolves"
                                       " to a link-local address"), created["error"]
    assert h.sandbox.receiver("emr").handshakes == 0
    return answer


async def test_a_notification_follows_where_the_name_resolves_when_it_is_sent(
    tmp_path: Path, resolving: dict[str, list[str]],
) -> None:
    """DNS rebinding: the name resolved to the subscriber at create, to the metadata address later."""
    resolving["localhost"] = ["127.0.0.1"]
    async with harness_on(tmp_path) as h:
        writer = h.client("system/*.cruds")
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        endpoint = h.endpoint("emr").replace("127.0.0.1", "localhost")
        answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
        assert answer.status_code == 201 and answer.json()["status"] == "active", answer.text
        sid = answer.json()["id"]
        resolving["localhost"] = ["::ffff:169.254.169.254"]
        await h.start_worker()
        patient = {"resourceType": "Patient", "name": [{"family": f"F{uuid.uuid4().hex[:6]}"}]}
        assert (await writer.post("/fhir/Patient", json=patient)).status_code == 201

        def failed() -> bool:
            record = h.store.subscription_get(sid)
            return record is not None and record.failures > 0

        await eventually(failed, timeout=20)
        record = h.store.subscription_get(sid)
        assert record is not None and record.error is not None
        assert record.error.startswith("notification failed: endpoint_refused"), record.error
        assert h.sandbox.receiver("emr").events == {}
        assert h.worker is not None and h.worker.delivery is not None
        admin = h.worker.delivery.admin
        dead: list[Any] = []

        async def dead_letter() -> bool:
            dead[:] = await admin.dead_letters(DeadLetterFilter(destination="subscriptions"))
            return bool(dead)

        for _ in range(100):
            if await dead_letter():
                break
            await asyncio.sleep(0.1)
        assert [letter.reason for letter in dead] == ["endpoint_refused"]
        assert "link-local" in (dead[0].detail or "")


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    async with harness_on(tmp_path) as h:
        h.app.state.ctx.services.subscriptions.transport = httpx.MockTransport(answer)
        owner = h.client("system/Subscription.cruds", "system/Patient.rs")
        created = await owner.post("/fhir/Subscription", json=subscription("new-patient", "http://127.0.0.1:9/hook"))
        assert created.json()["status"] == "error", created.text
        assert "http_307" in created.json()["error"]
    assert [str(request.url) for request in sent] == ["http://127.0.0.1:9/hook"]
    # Notifications go through the delivery engine's client, which follows none either.
    assert destination_client(timeout=1, concurrency=1).follow_redirects is False


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "address"), [
    ("2852039166", "169.254.169.254"), ("0xA9FEA9FE", "169.254.169.254"), ("0251.0376.0251.0376", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"), ("127.1", "127.0.0.1"), ("0", "0.0.0.0"), ("[::1]", "::1"),
    ("fe80::1%25eth0", "fe80::1"), ("localhost", "127.0.0.1"), ("LOCALHOST.", "127.0.0.1"),
    ("emr.example.org", None), ("08.1.1.1", None), ("", None),
])
def test_hosts_are_read_as_the_os_reads_them(host: str, address: str | None) -> None:
    found = literal_address(host)
    assert (str(found) if found is not None else None) == address


@pytest.mark.parametrize(("address", "kind", "private_kind"), [
    ("169.254.169.254", "link-local", "link-local"), ("fd00:ec2::254", "link-local", "link-local"),
    ("::ffff:169.254.169.254", "link-local", "link-local"), ("64:ff9b::a9fe:a9fe", "link-local", "link-local"),
    ("0.0.0.0", "unspecified", "unspecified"), ("::", "unspecified", "unspecified"),
    ("239.1.2.3", "multicast", "multicast"), ("ff05::2", "multicast", "multicast"),
    ("255.255.255.255", "broadcast", "broadcast"),
    ("127.0.0.1", None, "loopback"), ("::1", None, "loopback"), ("::ffff:127.0.0.1", None, "loopback"),
    ("10.1.2.3", None, "private"), ("172.31.255.255", None, "private"), ("192.168.0.1", None, "private"),
    ("100.100.100.200", None, "private"), ("fd12::1", None, "private"),
    ("93.184.215.14", None, None), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None, None),
    ("172.32.0.1", None, None),
])
def test_address_kinds(address: str, kind: str | None, private_kind: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip) == kind
    assert address_refusal(ip, block_private=True) == private_kind


def _guard(resolved: dict[str, list[str]], **settings: Any) -> EndpointGuard:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in resolved:
            raise OSError("no such name")
        return resolved[host]

    return EndpointGuard(SubscriptionSettings(**settings), resolve)


async def test_only_a_host_listed_exactly_is_exempt() -> None:
    names = {"meta.internal": ["169.254.169.254"], "emr.partner.test": ["10.0.0.7"],
             "rebound.partner.test": ["203.0.113.9", "169.254.169.254"]}
    guard = _guard(names, endpoint_hosts=["169.254.169.254", "meta.internal", "*.partner.test"])
    assert guard.refusal("http://169.254.169.254/x") is None
    assert await guard.send_refusal("http://meta.internal/x") is None
    assert await guard.send_refusal("http://emr.partner.test/x") is None
    # A pattern lets a name through, not where it resolves; one refused address of several is enough.
    assert "link-local" in (await guard.send_refusal("https://rebound.partner.test/x") or "")
    assert "link-local" in (guard.refusal("http://2852039166/") or "")  # another spelling: not listed
    strict = _guard(names, block_private_networks=True)
    assert "private" in (await strict.send_refusal("http://emr.partner.test/x") or "")
    assert await strict.send_refusal("http://unknown.test/x") is None  # not resolvable: the send fails by itself


async def test_the_system_resolver_reads_localhost() -> None:
    addresses = await endpoints_module.resolve_host("localhost", 80)
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)


# -- at connect time (the connection goes where the check looked) ------------------------------


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Names to the answers the stand-in resolver gives them in turn, the last one for ever after."""
    answers: dict[str, list[list[str]]] = {}

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(f"no such name: {host}")
        turns = answers[host]
        return turns.pop(0) if len(turns) > 1 else turns[0]

    monkeypatch.setattr(endpoints_module, "resolve_host", resolve)
    return answers


async def _subscribed(h: Harness, host: str) -> tuple[httpx.AsyncClient, str]:
    """A writer client, and an active subscription to new patients at the stand-in named by ``host``."""
    writer = h.client("system/*.cruds")
    owner = h.client("system/Subscription.cruds", "system/Patient.rs")
    endpoint = h.endpoint("emr").replace("127.0.0.1", host)
    answer = await owner.post("/fhir/Subscription", json=subscription("new-patient", endpoint))
    assert answer.status_code == 201 and answer.json()["status"] == "active", answer.text
    return writer, str(answer.json()["id"])


async def _new_patient(writer: httpx.AsyncClient) -> None:
    patient = {"resourceType": "Patient", "name": [{"family": f"F{uuid.uuid4().hex[:6]}"}]}
    assert (await writer.post("/fhir/Patient", json=patient)).status_code == 201


async def test_a_name_connects_to_the_address_the_guard_resolved(
    tmp_path: Path, rebinding: dict[str, list[list[str]]],
) -> None:
    """The handshake and notifications reach a name only the guard's resolver knows: httpx does no
    lookup of its own (there it would not resolve at all)."""
    rebinding["emr.partner.test"] = [["127.0.0.1"]]
    async with harness_on(tmp_path) as h:
        writer, _ = await _subscribed(h, "emr.partner.test")
        await h.start_worker()
        await _new_patient(writer)
        receiver = h.sandbox.receiver("emr")
        await eventually(lambda: bool(receiver.events), timeout=20)
        assert receiver.handshakes == 1


async def test_a_handshake_is_refused_when_the_name_rebinds_between_check_and_connect(
    tmp_path: Path, rebinding: dict[str, list[list[str]]],
) -> None:
    # The check before sending sees the subscriber; the connection's own lookup the metadata address.
    rebinding["emr.partner.test"] = [["127.0.0.1"], ["169.254.169.254"]]
    async with harness_on(tmp_path) as h:
        await _handshake_refused(h, "emr.partner.test")


async def test_a_notification_is_refused_when_the_name_rebinds_between_check_and_connect(
    tmp_path: Path, rebinding: dict[str, list[list[str]]],
) -> None:
    rebinding["emr.partner.test"] = [["127.0.0.1"]]
    async with harness_on(tmp_path) as h:
        writer, sid = await _subscribed(h, "emr.partner.test")
        # From now on the name answers the check with the subscriber and the connection with the
        # metadata address (a zero-TTL record flipping between the two lookups).
        flips = [["127.0.0.1"], ["::ffff:169.254.169.254"]] * 50
        rebinding["emr.partner.test"] = [*flips, ["::ffff:169.254.169.254"]]
        await h.start_worker()
        await _new_patient(writer)
        assert h.worker is not None and h.worker.delivery is not None
        admin = h.worker.delivery.admin
        dead: list[Any] = []
        for _ in range(200):
            dead[:] = await admin.dead_letters(DeadLetterFilter(destination="subscriptions"))
            if dead:
                break
            await asyncio.sleep(0.1)
        assert [letter.reason for letter in dead] == ["endpoint_refused"]
        assert "link-local" in (dead[0].detail or "")
        record = h.store.subscription_get(sid)
        assert record is not None and (record.error or "").startswith("notification failed: endpoint_refused")
        assert h.sandbox.receiver("emr").events == {}


async def test_a_transport_of_another_kind_is_left_alone() -> None:
    guard = _guard({})
    assert not pin_client(httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))), guard)
    client = destination_client(timeout=1.0, concurrency=1)
    try:
        assert pin_client(client, guard) and pin_client(client, guard)  # once wrapped, not twice
    finally:
        await client.aclose()


async def test_every_address_of_a_name_is_judged_at_connect() -> None:
    guard = _guard({"rebound.partner.test": ["203.0.113.9", "169.254.169.254"], "emr.partner.test": ["10.0.0.7"]},
                   endpoint_hosts=["listed.internal"])
    assert await guard.connect_addresses("rebound.partner.test", 443) == (
        [], "the endpoint host resolves to a link-local address, which subscriptions may not notify")
    assert await guard.connect_addresses("emr.partner.test", 443) == (["10.0.0.7"], None)
    assert await guard.connect_addresses("2852039166", 80) == (
        [], "the endpoint host is a link-local address, which subscriptions may not notify")
    assert await guard.connect_addresses("listed.internal", 80) == (["listed.internal"], None)
    with pytest.raises(OSError):
        await guard.connect_addresses("unknown.test", 80)
