"""Pull fixtures: the source API stand-ins served over real HTTP on loopback, and a gateway ingest
service (shipped mappings, each store backend) whose pulled sources point at them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.ingest import IngestService, MappingRegistry, SourceConfig
from gateway.pull import PullRunner
from gateway.search import QueryParser, default_registry
from gateway.store import Store
from source_sandbox import SourceSandbox, odk_sample_rows
from tests.support.live_server import LiveServer

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
ODK_PROJECT, ODK_FORM = 4, "chw_household_visit"
CC_DOMAIN, KOBO_ASSET = "pih-chw-demo", "aQ8rZk3YfG7mN2pLwX4vTs"
ENVIRON = {"ODK_PASSWORD": "pull-secret", "CC_KEY": "gateway@example.org:cc-api-key", "KOBO_TOKEN": "kobo-token",
           "CHT_PASSWORD": "pull-secret", "WRONG": "not-the-password"}  # fmt: skip


def golden(set_name: str, case: str) -> Any:
    """A shipped mapping set's golden input."""
    return json.loads((MAPPINGS / set_name / "tests" / f"{case}.input.json").read_text(encoding="utf-8"))


def pulled_sources(base_url: str, page_size: int = 2, secret: str | None = None) -> list[SourceConfig]:
    """One pulled source per API, all at the stand-in; ``secret`` replaces every secret's env var."""
    def basic(env: str) -> dict[str, Any]:
        return {"type": "basic", "username": "gateway@example.org", "secret_env": secret or env}

    common = {"base_url": base_url, "page_size": page_size, "interval": "5m"}
    return [
        SourceConfig(name="odk", kind="odk-central", mapping="odk", pull={
            **common, "auth": basic("ODK_PASSWORD"), "project": ODK_PROJECT, "form": ODK_FORM}),
        SourceConfig(name="commcare", kind="commcare-api", mapping="commcare", pull={
            **common, "domain": CC_DOMAIN,
            "auth": {"type": "api_token", "scheme": "ApiKey", "secret_env": secret or "CC_KEY"}}),
        SourceConfig(name="commcare-cases", kind="commcare-api", mapping="commcare", pull={
            **common, "domain": CC_DOMAIN, "endpoint": "case",
            "auth": {"type": "api_token", "scheme": "ApiKey", "secret_env": secret or "CC_KEY"}}),
        SourceConfig(name="cht", kind="cht-changes", mapping="cht", pull={**common, "auth": basic("CHT_PASSWORD")}),
        SourceConfig(name="kobo", kind="kobo-api", mapping="kobo", pull={
            **common, "asset": KOBO_ASSET,
            "auth": {"type": "api_token", "scheme": "Token", "secret_env": secret or "KOBO_TOKEN"}}),
    ]  # fmt: skip


def odk_household(n: int) -> dict[str, Any]:
    """The shared sample's household visit, as household ``n`` (its own ids; n=0 is the sample itself)."""
    row = copy.deepcopy(odk_sample_rows()[0])
    if n:
        row["__id"] = row["meta"]["instanceID"] = f"uuid:00000000-0000-4000-8000-{n:012d}"
        row["visit"]["household_id"] = f"HH-KBL-{n:04d}"
        for i, member in enumerate(row["household"]["member"]):
            member["__id"] = f"{n:020d}{i:020d}"
        del row["__system"]["submissionDate"]  # the server stamps it
    return row


class Sleeps:
    """Records the back-off waits a pull asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class PullHarness:
    """The stand-ins at ``url``, and a gateway pulling from them into ``store``."""

    def __init__(self, sandbox: SourceSandbox, url: str, store: Store, sources: list[SourceConfig]) -> None:
        self.sandbox = sandbox
        self.url = url
        self.store = store
        registry = default_registry()
        self.ingest = IngestService(store, QueryParser(registry, 20, 1000), MappingRegistry(MAPPINGS, sources))
        self.sleeps = Sleeps()
        self.runner = PullRunner(self.ingest, store, environ=ENVIRON, sleep=self.sleeps)

    def requests(self, api: str) -> list[dict[str, str]]:
        """The query strings of the requests made to ``api``."""
        return [query for name, _, query in self.sandbox.requests if name == api]

    def read(self, rtype: str, rid: str) -> dict[str, Any] | None:
        """A current resource (None if deleted or never written)."""
        found = self.store.read(rtype, rid)
        return None if found is None or found.deleted else dict(orjson.loads(found.content))

    def taken_back(self, rtype: str, rid: str) -> bool:
        """Whether a resource was retracted: deleted, or its status says entered-in-error (revoked, cancelled)."""
        resource = self.read(rtype, rid)
        return resource is None or any(
            code in orjson.dumps(resource) for code in (b'"entered-in-error"', b'"revoked"', b'"cancelled"')
        )

    def produced(self, source: str, record: Any) -> list[tuple[str, str]]:
        """The (type, id) of what the shipped mapping makes of ``record`` (to look them up in the store)."""
        mapping_set = self.ingest.registry.mapping_set(self.ingest.registry.source(source))
        bundle, _ = mapping_set.map_outputs(record)
        return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]


@pytest.fixture
def sandbox() -> SourceSandbox:
    """Fresh stand-ins."""
    return SourceSandbox()


@pytest.fixture
def served(sandbox: SourceSandbox) -> Iterator[str]:
    """The stand-ins over HTTP on loopback; their base URL."""
    with LiveServer(sandbox.app()) as server:
        yield server.url


@pytest.fixture
def pulls(sandbox: SourceSandbox, served: str, store: Store) -> Iterator[PullHarness]:
    """A gateway pulling from the stand-ins into a store of each backend, two records a page."""
    harness = PullHarness(sandbox, served, store, pulled_sources(served))
    yield harness
    harness.ingest.close()
