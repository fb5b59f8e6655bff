"""Property tests over HTTP: whatever is posted, never a 500, and nothing is lost.

Every answer is a 4xx OperationOutcome refusing the whole body, or a 200/202 report in
which each record was stored, found unchanged, or quarantined with an OperationOutcome
that the quarantine really holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.ingest.conftest import MAPPINGS, make_app
from tests.mapping.test_properties import JSON, mutated_fixture

PROFILE = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SOURCES = st.sampled_from(["commcare", "cht", "odk", "kobo", "csv"])
CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "application/fhir+json", "text/csv", "text/csv; charset=utf-8", "text/plain",
     "application/json; charset=latin-1", "multipart/form-data", ""]
)  # fmt: skip


class Gateway:
    """An app running in a background event loop, called synchronously (for hypothesis)."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient, store: Store) -> None:
        self.portal = portal
        self.client = client
        self.store = store

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.portal.call(partial(self.client.post, path, content=body, headers=headers))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("ingest-props")
    store = open_store(f"sqlite:///{folder}/props.db")
    app = make_app(store, MAPPINGS, max_body_bytes=256 * 1024)
    token = make_token(store, ("ingest:*",))
    with start_blocking_portal() as portal:
        lifespan = app.router.lifespan_context(app)
        portal.call(lifespan.__aenter__)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            yield Gateway(portal, client, store)
        finally:
            portal.call(client.aclose)
            portal.call(lifespan.__aexit__, None, None, None)
    store.close()


def _check(gateway: Gateway, source: str, body: bytes, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    response = gateway.post(f"/ingest/{source}", body, headers)
    assert response.status_code in (200, 202, 400, 413, 415), response.text
    payload = response.json()
    if response.status_code >= 400:
        assert payload["resourceType"] == "OperationOutcome"
        return
    counted = payload["stored"] + payload["unchanged"] + payload["deleted"] + payload["quarantined"]
    assert payload["records"] == counted
    assert (response.status_code == 202) == (payload["quarantined"] > 0)
    for result in payload["results"]:
        if result["status"] == "quarantined":
            held = gateway.store.quarantine_get(result["quarantine_id"])
            assert held is not None and held.outcome == result["outcome"]
            assert result["outcome"]["resourceType"] == "OperationOutcome"
        else:
            # a record deleted at its source that produced nothing yet takes nothing back
            assert result.get("resources") or result["status"] in ("unchanged", "deleted")


@PROFILE
@given(source=SOURCES, body=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_random_bytes(gateway: Gateway, source: str, body: bytes, content_type: str | None) -> None:
    _check(gateway, source, body, content_type)


@PROFILE
@given(source=SOURCES, value=JSON)
def test_random_json(gateway: Gateway, source: str, value: Any) -> None:
    _check(gateway, source, json.dumps(value, allow_nan=True).encode(), "application/json")


@PROFILE
@given(case=mutated_fixture(), as_array=st.booleans())
def test_mutated_real_records(gateway: Gateway, case: tuple[str, Any], as_array: bool) -> None:
    source, record = case
    if source == "csv":
        header = list(record) if isinstance(record, dict) else ["x"]
        rows = [",".join(header), ",".join(json.dumps(str(record.get(k, "")))[1:-1] for k in header)]
        _check(gateway, source, "\n".join(rows).encode(), "text/csv")
        return
    body = json.dumps([record, record] if as_array else record, allow_nan=True).encode()
    _check(gateway, source, body, "application/json")
