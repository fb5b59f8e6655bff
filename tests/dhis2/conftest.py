"""Fixtures for the DHIS2 connector tests: a sandbox over real HTTP, jobs, connectors, metadata."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from dhis2_sandbox import (
    DEFAULT_TOKEN,
    FaultConfig,
    SandboxServer,
    SandboxSettings,
    create_sandbox_app,
)
from dhis2_sandbox.catalog import load_catalog
from dhis2_sandbox.fields import apply_fields, parse_fields
from gateway.clock import SystemClock
from gateway.connectors import AuthConfig, Credentials
from gateway.connectors.base import DeliveryOutcome, Job, JobOp
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.metadata import FIELDS, MetadataSnapshot
from gateway.connectors.dhis2.sources import ResourceBundle
from tests.sandbox.conftest import Demo

TOKEN = DEFAULT_TOKEN
MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
_SEQ = count(1)


@pytest.fixture(scope="session")
def demo() -> Demo:
    return Demo(load_catalog())


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh, fault-free sandbox on a loopback port."""
    with SandboxServer(create_sandbox_app(None, FaultConfig(), SandboxSettings())) as server:
        yield server


def pat_auth() -> httpx.Auth:
    """``Authorization: ApiToken <demo PAT>``, the way destinations configure it."""
    return Credentials(AuthConfig(type="api_token", secret_env="UNUSED"), SecretStr(TOKEN)).httpx_auth()


def make_job(resource: dict[str, Any], *, op: JobOp = "update", key: str | None = None) -> Job:
    """A delivery job for one resource, as the outbox would queue it."""
    seq = next(_SEQ)
    ref = f"{resource['resourceType']}/{resource['id']}"
    return Job(
        id=f"dhis2:{seq}",
        destination="dhis2",
        seq=seq,
        resource_type=resource["resourceType"],
        resource_id=resource["id"],
        version=1,
        op=op,
        key=key or ref,
        payload=b"" if op == "delete" else orjson.dumps(resource),
    )


def make_connector(base_url: str, source: ResourceBundle, **options: Any) -> Dhis2Connector:
    """A connector for the demo mappings against a DHIS2 at ``base_url``."""
    settings = Dhis2Options(
        mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml",
        aggregate_mapping=MAPPINGS / "dhis2" / "chw-monthly-report.yaml",
        uid_namespace="test",
        **options,
    )
    client = Dhis2Client(base_url, auth=pat_auth())
    return Dhis2Connector(client, settings, source, SystemClock(), mappings_root=MAPPINGS)


def demo_snapshot(base_url: str = "http://sandbox") -> MetadataSnapshot:
    """The sandbox's demo metadata as ``pull_metadata`` fetches it (same ``fields=``), offline."""
    catalog = load_catalog()
    collections = {
        name: [
            apply_fields(obj, parse_fields(fields), catalog.by_id.get) for obj in catalog.collections[name]
        ]
        for name, fields in FIELDS.items()
    }
    return MetadataSnapshot(base_url, "2.41.0", datetime.now(UTC), collections)


VISIT_MAPPING = MAPPINGS / "dhis2" / "chw-household-visit.yaml"


def edited_visit_mapping(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped tracker mapping with ``old`` (which it must hold) replaced by ``new``, written to
    ``tmp_path`` beside copies of the files it names (org-units.yaml, ...)."""
    shipped = VISIT_MAPPING.read_text()
    assert old in shipped
    path = tmp_path / "visit.yaml"
    path.write_text(shipped.replace(old, new, 1))
    for beside in VISIT_MAPPING.parent.glob("*.yaml"):
        if beside.name != VISIT_MAPPING.name:
            (tmp_path / beside.name).write_text(beside.read_text())
    return path


async def deliver_visit(
    base_url: str, options: Dhis2Options, resources: list[dict[str, Any]]
) -> tuple[DeliveryOutcome, list[dict[str, Any]]]:
    """Deliver ``resources[3]`` (a ``chw_record`` visit) with ``options``: its outcome, and the
    events DHIS2 then holds."""
    conn = Dhis2Connector(Dhis2Client(base_url, auth=pat_auth()), options, ResourceBundle(resources),
                          SystemClock(), mappings_root=MAPPINGS)
    try:
        (outcome,) = await conn.deliver([make_job(resources[3])])
    finally:
        await conn.aclose()
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"ApiToken {TOKEN}"}) as client:
        events = (await client.get("/api/tracker/events")).json()["events"]
    return outcome, events
