"""JSON Patch within the limits a request body has (``max_body_bytes``, ``max_json_depth``).

A patch document is small, but its ``copy`` operations may copy what earlier ones built: thirty
``{"op": "copy", "from": "/name", "path": "/name/-"}`` double the resource thirty times, and a
gateway answering ``PATCH /fhir/Patient/x`` with them was killed by the kernel at 12 GB (the write
lock held meanwhile). A chain of ``add`` operations one level deeper each built a resource deeper
than the validator's recursion: a 500. Both are refused with 422 ``too-costly`` now, nothing
stored, over REST and in Bundles alike.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway import jsonio
from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import ApiHarness
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

PATCH = {"Content-Type": "application/json-patch+json"}
BODY_BYTES = 1024 * 1024


@pytest.fixture
async def api_on(store_url: str, store: Store) -> AsyncIterator[ApiHarness]:
    """The app in-process on each store backend, bodies limited to 1 MiB."""
    settings = Settings(store_url=store_url, allowed_hosts=["gateway.test"], max_body_bytes=BODY_BYTES,
                        rate_limit=MACHINE_SPEED_LIMITS)  # fmt: skip
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        harness = ApiHarness(app, store)
        yield harness
        await harness.aclose()


def _doubling(times: int) -> list[dict[str, Any]]:
    """``times`` copies of the Patient's names array into itself: 2**times names' worth of JSON."""
    return [{"op": "copy", "from": "/name", "path": "/name/-"} for _ in range(times)]


def _deeper(levels: int) -> list[dict[str, Any]]:
    """Extensions nested ``levels`` deep, one ``add`` a level."""
    ops: list[dict[str, Any]] = []
    path = ""
    for _ in range(levels):
        ops.append({"op": "add", "path": f"{path}/extension", "value": [{"url": "http://x.org/e"}]})
        path += "/extension/0"
    return ops


def _too_costly(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text[:500]
    issue: dict[str, Any] = response.json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    return issue


async def _patient(client: httpx.AsyncClient, pid: str) -> None:
    body = {"resourceType": "Patient", "id": pid, "name": [{"family": "Mwangi", "given": ["Amina"]}]}
    assert (await client.put(f"/fhir/Patient/{pid}", json=body)).status_code == 201


async def _version(client: httpx.AsyncClient, pid: str) -> str:
    response = await client.get(f"/fhir/Patient/{pid}")
    assert response.status_code == 200
    version: str = response.json()["meta"]["versionId"]
    return version


async def test_copies_past_the_body_limit_are_refused_and_nothing_is_stored(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "dbl")
    issue = _too_costly(await client.patch("/fhir/Patient/dbl", content=jsonio.dumps(_doubling(18)), headers=PATCH))
    assert str(BODY_BYTES) in issue["diagnostics"]
    assert await _version(client, "dbl") == "1"


async def test_copies_within_the_limit_apply(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "cp")
    ops = [{"op": "copy", "from": "/name/0", "path": "/name/-"} for _ in range(5)]
    response = await client.patch("/fhir/Patient/cp", content=jsonio.dumps(ops), headers=PATCH)
    assert response.status_code == 200, response.text
    assert len(response.json()["name"]) == 6


@pytest.mark.parametrize("levels", [70, 300])
async def test_a_patch_nesting_past_the_depth_limit_is_refused_not_a_server_error(
    api_on: ApiHarness, levels: int
) -> None:
    client = api_on.client
    await _patient(client, f"deep{levels}")
    response = await client.patch(f"/fhir/Patient/deep{levels}", content=jsonio.dumps(_deeper(levels)), headers=PATCH)
    _too_costly(response)
    assert await _version(client, f"deep{levels}") == "1"


def _patch_entry(pid: str, ops: Any) -> dict[str, Any]:
    data = base64.b64encode(ops if isinstance(ops, bytes) else jsonio.dumps(ops)).decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    return {"request": {"method": "PATCH", "url": f"Patient/{pid}"}, "resource": binary}


async def test_the_limits_hold_for_patches_in_bundles(api_on: ApiHarness) -> None:
    client = api_on.client
    await _patient(client, "bdl")
    # A value nested 600 levels deep, base64 inside the Bundle (not in its JSON, whose depth is checked).
    levels = b'{"url": "http://x.org/e", "extension": [' * 300 + b'{"url": "http://x.org/e"}' + b"]}" * 300
    deep = b'[{"op": "add", "path": "/extension", "value": [' + levels + b"]}]"
    entries = [_patch_entry("bdl", _doubling(18)), _patch_entry("bdl", _deeper(300)), _patch_entry("bdl", deep)]
    batch = await client.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert batch.status_code == 200, batch.text[:500]
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert [s.split()[0] for s in statuses] == ["422", "422", "400"], statuses
    codes = [e["response"]["outcome"]["issue"][0]["code"] for e in batch.json()["entry"]]
    assert codes == ["too-costly"] * 3, codes
    transaction = await client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                   "entry": [_patch_entry("bdl", _doubling(18))]})  # fmt: skip
    _too_costly(transaction)
    assert await _version(client, "bdl") == "1"
