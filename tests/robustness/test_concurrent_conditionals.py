"""Conditional writes raced by many clients at once: no 5xx, and exactly one resource each.

Clients retrying the same submission in parallel (a CHW app on a flaky network does) must
not create duplicates through ``If-None-Exist``, a transaction's ``ifNoneExist``, a
conditional update or update-as-create, on either backend.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import httpx

from tests.robustness.http import Gateway

CLIENTS = 8


def _patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


def _submit(client: httpx.Client, system: str, rid: str) -> list[tuple[str, int]]:
    """The four conditional writes one client makes; (interaction, status) for each."""
    condition = {"If-None-Exist": f"identifier={system}|create"}
    request = {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|tx"}
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [{"resource": _patient(system, "tx"), "request": request}]}  # fmt: skip
    return [
        ("create", client.post("/Patient", json=_patient(system, "create"), headers=condition).status_code),
        ("transaction", client.post("", json=transaction).status_code),
        (
            "update",
            client.put(f"/Patient?identifier={system}|update", json=_patient(system, "update")).status_code,
        ),
        ("put", client.put(f"/Patient/{rid}", json={**_patient(system, "put"), "id": rid}).status_code),
    ]


def test_racing_conditional_writes_create_exactly_one_resource_each(any_gateway: Gateway) -> None:
    system = f"urn:test:race:{uuid.uuid4().hex}"
    rid = f"race-{uuid.uuid4().hex[:12]}"
    statuses: Counter[tuple[str, int]] = Counter()
    errors: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def client_run() -> None:
        try:
            with any_gateway.client() as client:  # the oracles fail any 5xx or non-OO error
                start.wait(timeout=30)
                statuses.update(_submit(client, system, rid))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    with any_gateway.client() as client:
        # First requests are slow (models built, the schema oracle compiled, in this same process);
        # warm up so the race is between requests, not between cold starts.
        _submit(client, f"{system}:warm-up", f"{rid}-warm-up")
    threads = [threading.Thread(target=client_run) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
    for interaction in ("create", "update", "put"):
        assert statuses[(interaction, 201)] == 1, statuses
        assert statuses[(interaction, 200)] == CLIENTS - 1, statuses
    assert statuses[("transaction", 200)] == CLIENTS, statuses
    with any_gateway.client() as client:
        for value in ("create", "tx", "update", "put"):
            found = client.get("/Patient", params={"identifier": f"{system}|{value}", "_summary": "count"})
            assert found.json()["total"] == 1, value
