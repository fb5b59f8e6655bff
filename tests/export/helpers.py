"""Driving ``$export`` over HTTP the way a Bulk Data client does: kick off, poll, download."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from gateway.store import Store

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def seed(store: Store, resources: list[dict[str, Any]]) -> None:
    """Store resources under their own ids."""
    with store.transaction() as tx:
        for resource in resources:
            tx.update(resource)


async def kick_off(client: httpx.AsyncClient, path: str = "/fhir/$export", **params: Any) -> str:
    """Start an export; the status URL."""
    response = await client.get(path, params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


async def wait_done(client: httpx.AsyncClient, status_url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll until the manifest is there (checking the 202 answers on the way)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get(status_url)
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json")
            manifest: dict[str, Any] = response.json()
            return manifest
        assert response.status_code == 202, response.text
        assert response.headers["Retry-After"].isdigit() and response.headers["X-Progress"]
        assert loop.time() < deadline, "the export did not finish"
        await asyncio.sleep(0.02)


async def download(client: httpx.AsyncClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every output file's resources, by type (files of one type in manifest order)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        response = await client.get(item["url"], headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = response.content.split(b"\n")
        assert lines[-1] == b""  # every line ends with a newline, including the last
        resources = [orjson.loads(line) for line in lines[:-1]]
        assert len(resources) == item["count"]
        assert all(r["resourceType"] == item["type"] for r in resources)
        out.setdefault(item["type"], []).extend(resources)
    return out


async def export(
    client: httpx.AsyncClient, path: str = "/fhir/$export", **params: Any
) -> dict[str, list[dict[str, Any]]]:
    """Kick off, wait and download: the exported resources by type."""
    manifest = await wait_done(client, await kick_off(client, path, **params))
    return await download(client, manifest)


def ids(exported: dict[str, list[dict[str, Any]]]) -> set[str]:
    """``Type/id`` of everything exported."""
    return {f"{r['resourceType']}/{r['id']}" for rs in exported.values() for r in rs}
