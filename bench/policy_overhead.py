"""What a per-client data policy costs reads (issue 11; goal: at most 5% of read throughput).

One app in-process (httpx over ASGI, so no socket noise), one store per backend seeded
with Organizations (10 districts, 3 health centres each), Patients spread over them and
Observations about them. Three clients with the same scopes: no policy (the baseline),
a district organisation subtree, and an address district. For each backend and client:
read-by-id of a visible Patient and of a visible Observation, and a search
(``Observation?code=…&_count=20``, with the total). Rounds alternate between the clients
so drift in the machine's speed hits all of them alike; the table shows medians.

Run: ``python -m bench.policy_overhead [--patients N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.settings import Settings
from gateway.store import ApiClient, Store, open_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
CODES = ["8867-4", "8310-5", "29463-7", "8480-6", "8462-4"]
CLIENTS: dict[str, dict[str, Any] | None] = {
    "no policy (baseline)": None,
    "organisation subtree": {"organizations": ["Organization/d0"]},
    "address district": {"districts": ["District 0"]},
}


def seed(store: Store, patients: int) -> tuple[str, str]:
    """Organizations, Patients and 5 Observations each; a visible Patient and Observation id."""
    with store.transaction() as tx:
        for d in range(10):
            tx.update({"resourceType": "Organization", "id": f"d{d}", "name": f"District {d}"})
            for h in range(3):
                tx.update({"resourceType": "Organization", "id": f"d{d}-hc{h}", "name": f"HC {d}.{h}",
                           "partOf": {"reference": f"Organization/d{d}"}})
    for start in range(0, patients, 500):
        with store.transaction() as tx:
            for i in range(start, min(patients, start + 500)):
                d = i % 10
                tx.update({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f"F{i}"}],
                           "managingOrganization": {"reference": f"Organization/d{d}-hc{i % 3}"},
                           "address": [{"district": f"District {d}", "city": f"Town {i % 7}"}]})
                for k, code in enumerate(CODES):
                    tx.update({"resourceType": "Observation", "id": f"o{i}-{k}", "status": "final",
                               "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                               "subject": {"reference": f"Patient/p{i}"},
                               "effectiveDateTime": f"2026-0{1 + k}-1{i % 10}"})
    return "p0", "o0-0"


async def measure(client: httpx.AsyncClient, path: str, seconds: float) -> float:
    """Requests per second of sequential GETs of ``path`` for about ``seconds``."""
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        done += 1
    return done / elapsed


async def run_backend(url: str, patients: int, rounds: int, seconds: float) -> list[tuple[str, str, float]]:
    store = open_store(url)
    patient, observation = seed(store, patients)
    tokens: dict[str, str] = {}
    for label, policy in CLIENTS.items():
        token = new_token()
        name = f"bench-{uuid.uuid4().hex[:6]}"
        store.save_client(ApiClient(name, ("system/*.rs",), datetime.now(UTC), policy=policy), hash_token(token))
        tokens[label] = token
    app = create_app(Settings(store_url=url), store=store)
    paths = {"read Patient": f"/fhir/Patient/{patient}", "read Observation": f"/fhir/Observation/{observation}",
             "search Observation?code": f"/fhir/Observation?code={CODES[0]}&_count=20"}
    samples: dict[tuple[str, str], list[float]] = {}
    async with app.router.lifespan_context(app):
        clients = {label: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                            headers={"Authorization": f"Bearer {token}"})
                   for label, token in tokens.items()}
        try:
            for client in clients.values():  # warm-up
                for path in paths.values():
                    await measure(client, path, 0.2)
            for _ in range(rounds):
                for what, path in paths.items():
                    for label, client in clients.items():
                        samples.setdefault((what, label), []).append(await measure(client, path, seconds))
        finally:
            for client in clients.values():
                await client.aclose()
    store.close()
    return [(what, label, statistics.median(values)) for (what, label), values in samples.items()]


def main() -> None:
    """Run on SQLite and PostgreSQL and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"SQLite": f"sqlite:///{Path(tmp)}/policy.db", "PostgreSQL": f"{PG_URL}?schema={schema}"}
        print(f"data policy overhead: {args.patients} Patients, {args.patients * 5} Observations, "
              f"{args.rounds} rounds of {args.seconds:.1f} s per cell, medians (req/s, in-process ASGI)")
        print(f"{'backend':<11} {'request':<24} {'client':<22} {'req/s':>8} {'vs baseline':>12}")
        try:
            for backend, url in backends.items():
                rows = asyncio.run(run_backend(url, args.patients, args.rounds, args.seconds))
                base = {what: rate for what, label, rate in rows if label == "no policy (baseline)"}
                for what, label, rate in rows:
                    print(f"{backend:<11} {what:<24} {label:<22} {rate:8.0f} {rate / base[what]:11.3f}x")
        finally:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
