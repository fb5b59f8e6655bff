"""DHIS2 delivery throughput: events/s into the sandbox by batch size and DHIS2 latency.

    .venv/bin/python -m bench.dhis2_bench

The sandbox runs in its own process (``gateway sandbox dhis2``) so the connector and
DHIS2 do not share a GIL. Each event is one CHW visit: its tracked entity, enrollment and
event (3 tracker objects, 6 data values), planned from FHIR and sent by the ``dhis2``
connector one batch at a time (one worker). ``sync`` posts ``async=false``; ``async``
submits a job and polls it (the connector's default above 200 objects, polling from
0.5 s). Latency is added by the sandbox to every request (``PUT /sandbox/faults``).
Ratios are against batch 1 / 0 ms / sync, measured in the same run.

Requests per visit (``--requests`` runs only this part): the jobs a visit really makes
(its Patient, its Encounter, each Observation/MedicationDispense/ServiceRequest of it, one
job per patient per batch as the queue hands them out), delivered with change detection
off (baseline: every job sends its tracked entity + enrollment + event) and on (digests of
what DHIS2 accepted, kept in a SQLite delivery queue), counting requests at the sandbox.
Phases: new visits; the same jobs again (nothing changed); one value corrected per visit.
Delivery CPU per record (``--cpu [--records N] [--rounds R] [--postgres] [--compare DIR]``):
the CPU-seconds of the delivering process per CHT assessment delivered (a child's visit:
its Encounter, Observations, MedicationDispense and ServiceRequest jobs, the UIDs written
back), measured in a child process (``bench/_dhis2_cpu_child.py``) that ingests the
households and children first (not measured), then the assessments with delivery stopped,
then drains them to the sandbox. ``--postgres`` runs on PostgreSQL and Redis (the national
deployment's), else SQLite store and queue. ``--compare DIR`` runs the same child against
another checkout (e.g. ``git -C /work/main archive HEAD | tar -x -C /tmp/dhis-base``),
alternating rounds; ratios are against it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from dhis2_sandbox import DEFAULT_TOKEN
from gateway.clock import SystemClock
from gateway.connectors import AuthConfig, Credentials
from gateway.connectors.base import Job, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.metadata import pull_metadata
from gateway.connectors.dhis2.sources import ResourceBundle
from gateway.delivery.sqlite_queue import SQLiteQueue

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
SCENARIOS = [  # (batch size, latency ms, mode, events)
    (1, 0, "sync", 100),
    (50, 0, "sync", 1000),
    (250, 0, "sync", 2000),
    (250, 0, "async", 2000),
    (1, 200, "sync", 15),
    (50, 200, "sync", 500),
    (250, 200, "sync", 1500),
    (250, 200, "async", 1500),
]


@dataclass
class Result:
    batch: int
    latency: int
    mode: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _records(start: int, count: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from tests.dhis2.records import chw_record, places

    out = places()
    for n in range(start, start + count):
        out += chw_record(n, referral=False)
    return out


def _job(resource: dict[str, Any], seq: int) -> Job:
    ref = f"{resource['resourceType']}/{resource['id']}"
    return Job(
        id=f"bench:{seq}",
        destination="bench",
        seq=seq,
        resource_type=resource["resourceType"],
        resource_id=resource["id"],
        version=1,
        op="update",
        key=ref,
        payload=orjson.dumps(resource),
    )


async def _scenario(base_url: str, batch: int, latency: int, mode: str, events: int, offset: int) -> Result:
    auth = Credentials(AuthConfig(type="api_token", secret_env="X"), SecretStr(DEFAULT_TOKEN)).httpx_auth()
    async with httpx.AsyncClient(base_url=base_url) as admin:
        await admin.post("/sandbox/reset")
        await admin.put("/sandbox/faults", json={"latency_ms": 0})
        metadata_client = Dhis2Client(base_url, auth=auth)
        snapshot = await pull_metadata(metadata_client)
        await metadata_client.aclose()
        await admin.put("/sandbox/faults", json={"latency_ms": latency})
    resources = _records(offset, events)
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    options = Dhis2Options(
        mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml",
        uid_namespace="bench",
        async_threshold=1 if mode == "async" else 1_000_000,
    )
    connector = Dhis2Connector(
        Dhis2Client(base_url, auth=auth),
        options,
        ResourceBundle(resources),
        SystemClock(),
        mappings_root=MAPPINGS,
        snapshot=snapshot,
    )
    started = time.perf_counter()
    try:
        for first in range(0, len(encounters), batch):
            jobs = [_job(r, first + i) for i, r in enumerate(encounters[first : first + batch])]
            outcomes = await connector.deliver(jobs)
            failed = [o for o in outcomes if not isinstance(o, Success)]
            if failed:
                raise SystemExit(f"delivery failed: {failed[0]}")
    finally:
        await connector.aclose()
    return Result(batch, latency, mode, len(encounters), time.perf_counter() - started)


async def _run(base_url: str) -> list[Result]:
    results = []
    offset = 0
    for batch, latency, mode, events in SCENARIOS:
        results.append(await _scenario(base_url, batch, latency, mode, events, offset))
        offset += events
        print(
            f"  batch {batch:>3} latency {latency:>3} ms {mode:<5}: {results[-1].rate:8.1f} events/s",
            flush=True,
        )
    return results


VISITS = 40
PHASES = ("new visits", "same jobs again", "one value corrected")


async def _requests(base_url: str) -> tuple[int, int]:
    """Requests the sandbox answered, and tracker objects it received, so far."""
    async with httpx.AsyncClient(base_url=base_url) as admin:
        requests = int((await admin.get("/sandbox/stats")).json()["faults"]["requests"])
        received = (await admin.get("/sandbox/received")).json()
    return requests, sum(n for counts in received.values() for n in counts.values())


async def _requests_per_visit(base_url: str, detect: bool) -> dict[str, tuple[float, float]]:
    """(requests, tracker objects) per visit in each phase, with change detection on or off."""
    auth = Credentials(AuthConfig(type="api_token", secret_env="X"), SecretStr(DEFAULT_TOKEN)).httpx_auth()
    async with httpx.AsyncClient(base_url=base_url) as admin:
        await admin.post("/sandbox/reset")
        await admin.put("/sandbox/faults", json={"latency_ms": 0})
    metadata_client = Dhis2Client(base_url, auth=auth)
    snapshot = await pull_metadata(metadata_client)
    await metadata_client.aclose()
    resources = _records(100_000, VISITS)
    bundle = ResourceBundle(resources)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        subject = (r.get("subject") or {}).get("reference")
        owner = f"Patient/{r['id']}" if r["resourceType"] == "Patient" else subject
        if owner is not None:
            by_patient.setdefault(owner, []).append(r)
    options = Dhis2Options(mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml", uid_namespace="bench-req")
    with tempfile.TemporaryDirectory() as tmp:
        queue = SQLiteQueue(Path(tmp) / "queue.db", clock=SystemClock())
        connector = Dhis2Connector(
            Dhis2Client(base_url, auth=auth),
            options,
            bundle,
            SystemClock(),
            mappings_root=MAPPINGS,
            snapshot=snapshot,
            digests=queue if detect else None,
            destination="bench",
        )
        seq = 0

        async def deliver(streams: list[list[dict[str, Any]]]) -> None:
            # Visits arriving one at a time, each job delivered as the queue hands it out.
            nonlocal seq
            for stream in streams:
                for resource in stream:
                    seq += 1
                    for outcome in await connector.deliver([_job(resource, seq)]):
                        if not isinstance(outcome, Success):
                            raise SystemExit(f"delivery failed: {outcome}")

        result: dict[str, tuple[float, float]] = {}
        try:
            streams = list(by_patient.values())
            for phase in PHASES:
                if phase == "one value corrected":
                    changed = []
                    for stream in streams:
                        muac = next(r for r in stream if r["id"].endswith("-muac"))
                        muac = {**muac, "valueQuantity": {**muac["valueQuantity"], "value": 12.4}}
                        bundle.add(muac)
                        changed.append([muac])
                    phase_streams = changed
                else:
                    phase_streams = streams
                requests, objects = await _requests(base_url)
                await deliver(phase_streams)
                requests_after, objects_after = await _requests(base_url)
                visits = len(streams)
                result[phase] = ((requests_after - requests) / visits, (objects_after - objects) / visits)
        finally:
            await connector.aclose()
            await queue.close()
    return result


def _print_requests(base_url: str) -> None:
    off = asyncio.run(_requests_per_visit(base_url, detect=False))
    on = asyncio.run(_requests_per_visit(base_url, detect=True))
    print(f"\nDHIS2 requests per visit ({VISITS} visits, one job per call; baseline: change detection off)")
    print(f"{'phase':<20} {'requests':>9} {'(skip unchanged)':>17} {'ratio':>6} {'objects':>8} {'(skip unch.)':>13}")
    for phase in PHASES:
        (req_off, obj_off), (req_on, obj_on) = off[phase], on[phase]
        ratio = f"{req_on / req_off:>5.2f}x" if req_off else "    - "
        print(f"{phase:<20} {req_off:>9.2f} {req_on:>17.2f} {ratio} {obj_off:>8.2f} {obj_on:>13.2f}")


def _cpu_round(base_url: str, tree: Path, records: int, postgres: bool) -> float:
    """CPU-seconds per record of one child run on ``tree``'s gateway."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        urls: list[str] = []
        schema = f"bench_dhis2cpu_{uuid.uuid4().hex[:8]}"
        if postgres:
            from tests.conftest import PG_URL

            urls = [f"{PG_URL}?schema={schema}", "redis://127.0.0.1:6379/0", f"bench:dhis2cpu:{schema}"]
        try:
            done = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "_dhis2_cpu_child.py"), base_url, str(records), tmp, *urls],
                env=env,
                capture_output=True,
                check=True,
                text=True,
            )
        finally:
            if postgres:
                import psycopg

                from tests.conftest import PG_URL

                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    if result["dead"]:
        raise SystemExit(f"{tree}: {result['dead']} dead letters")
    return float(result["cpu"]) / records


def _print_cpu(base_url: str, args: list[str]) -> None:
    """Run the ``--cpu`` rounds, alternating trees, and print their table."""

    def option(name: str, default: str) -> str:
        return args[args.index(name) + 1] if name in args else default

    records, rounds = int(option("--records", "200")), int(option("--rounds", "3"))
    postgres = "--postgres" in args
    trees = {"this tree": ROOT}
    if "--compare" in args:
        trees = {"baseline (--compare)": Path(option("--compare", "")).resolve(), **trees}
    figures: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            figures[name].append(_cpu_round(base_url, tree, records, postgres))
    backend = "PostgreSQL + Redis" if postgres else "SQLite store + queue"
    load = os.getloadavg()[0]
    print(f"\nDHIS2 delivery CPU per record ({backend}; {records} assessments x {rounds} rounds, alternating;")
    print(f" load average {load:.1f}; CPU-seconds of the delivering process / assessment delivered)")
    print(f"{'tree':<22} {'median ms':>10} {'range ms':>16} {'ratio':>7}")
    base = statistics.median(next(iter(figures.values())))
    for name, values in figures.items():
        median = statistics.median(values)
        span = f"{min(values) * 1000:.1f}-{max(values) * 1000:.1f}"
        print(f"{name:<22} {median * 1000:>10.1f} {span:>16} {median / base:>6.2f}x")


def main() -> int:
    """Start the sandbox, run the scenarios, print the table."""
    only_requests = "--requests" in sys.argv[1:]
    only_cpu = "--cpu" in sys.argv[1:]
    port = _free_port()
    code = "from gateway.cli.sandbox import sandbox_app; sandbox_app()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "dhis2", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base_url}/api/ping", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        if only_cpu:
            _print_cpu(base_url, sys.argv[1:])
            return 0
        _print_requests(base_url)
        if only_requests:
            return 0
        results = asyncio.run(_run(base_url))
    finally:
        process.terminate()
        process.wait(timeout=10)
    baseline = results[0].rate
    print("\nDHIS2 delivery throughput (one worker; events = TE + enrollment + event each)")
    print(
        f"{'batch':>5} {'latency':>8} {'mode':<6} {'events':>6} {'seconds':>8} {'events/s':>9} {'ratio':>7}"
    )
    for r in results:
        print(
            f"{r.batch:>5} {r.latency:>6}ms {r.mode:<6} {r.events:>6} {r.seconds:>8.2f} {r.rate:>9.1f} "
            f"{r.rate / baseline:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
