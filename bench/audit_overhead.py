"""What the audit trail costs on the read path (issue 11).

Two gateway processes (uvicorn, SQLite store, bearer auth) over copies of one database,
one with the audit trail on (the default) and one with ``GATEWAY_AUDIT__ENABLED=false``,
take the same load in alternating rounds; each keeps its median round, so a burst of
other load on the machine does not decide the ratio. Measured: FHIR read by id, and a
search returning one patient's 10 Observations. Goal: audit on >= 95% of audit off.

Afterwards the audited database must hold one AuditEvent per request sent to it (the
writer flushes what is left when the server shuts down), or the numbers would flatter.
Last, the CPU cost of writing one AuditEvent (building it, its index rows, the SQLite
insert and commit) is timed in-process, less noisy than throughput on a shared machine,
and set against the CPU time one read costs at the measured rate of the unaudited server.

Run: ``python -m bench.audit_overhead [--requests N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench._http_load import run_load
from bench.read_search import free_port, wait_ready
from gateway.audit import AccessRecord, audit_event, audit_index
from gateway.auth import hash_token, new_token
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import ApiClient, open_store

SERVERS = {"audit off": "false", "audit on": "true"}


def seed(url: str) -> tuple[str, dict[str, str]]:
    """A client, a patient and their 10 Observations; the read and search paths and headers."""
    store = open_store(url)
    token = new_token()
    store.save_client(ApiClient("bench", ("system/*.cruds",), datetime.now(UTC)), hash_token(token))
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "p1", "name": [{"family": "Achieng", "given": ["Mary"]}],
                   "gender": "female", "birthDate": "1990-04-02"})
        for n in range(10):
            tx.create({"resourceType": "Observation", "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                       "subject": {"reference": "Patient/p1"}, "effectiveDateTime": f"2024-01-{n + 1:02d}",
                       "valueQuantity": {"value": 70 + n, "unit": "/min"}})  # fmt: skip
    store.close()
    return token, {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}


def audit_events(url: str) -> int:
    """AuditEvents stored in a database."""
    store = open_store(url)
    try:
        query = QueryParser(default_registry(), 20, 1000).parse("AuditEvent", [("_summary", "count")])
        total = store.search(query).total
        return total or 0
    finally:
        store.close()


def flush_cost(workdir: Path, events: int = 5000, batch: int = 500) -> tuple[float, float]:
    """CPU and wall microseconds to write one read's AuditEvent, in batches as the writer does."""
    store = open_store(f"sqlite:///{workdir}/flush.db")
    records = []
    for _ in range(events):
        record = AccessRecord(time.time(), "read", "R", client="bench", address="127.0.0.1", status=200)
        record.touched("Patient", "p1", 1)
        records.append(record)
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, events, batch):
        built = [audit_event(record) for record in records[start : start + batch]]
        store.audit_append(built, [audit_index(event) for event in built])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    store.close()
    return cpu / events * 1e6, wall / events * 1e6


def main() -> None:
    """Measure reads and searches with the audit trail on and off; print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    first = f"sqlite:///{workdir}/off.db"
    _, headers = seed(first)
    shutil.copy(workdir / "off.db", workdir / "on.db")
    urls = {"audit off": first, "audit on": f"sqlite:///{workdir}/on.db"}
    paths = {"read by id": "/fhir/Patient/p1", "search (10 matches)": "/fhir/Observation?subject=Patient/p1"}
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    sent = dict.fromkeys(SERVERS, 0)
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        for name, enabled in SERVERS.items():
            port = free_port()
            env = {**os.environ, "GATEWAY_AUDIT__ENABLED": enabled}
            procs[name] = (subprocess.Popen([sys.executable, "-m", "bench._servers", "gateway", urls[name],
                                             str(port)], env=env), port)  # fmt: skip
            wait_ready(port, "/healthz")
            for path in paths.values():  # warm-up
                run_load("127.0.0.1", port, path, headers, total=1000, concurrency=args.concurrency)
                sent[name] += 1000
        for _ in range(args.rounds):
            for label, path in paths.items():
                for name, (_, port) in procs.items():
                    result = run_load("127.0.0.1", port, path, headers, total=args.requests,
                                      concurrency=args.concurrency)
                    assert result.errors == 0, f"{name}: {result.errors} non-200 answers"
                    sent[name] += args.requests
                    runs.setdefault((label, name), []).append((result.rps, result.p50, result.pct(99)))
    finally:
        for proc, _ in procs.values():
            proc.terminate()  # uvicorn shuts down gracefully: the audit writer flushes
            proc.wait(30)
    stored = audit_events(urls["audit on"])
    print(f"\n== Audit trail overhead: {args.rounds} alternating rounds of {args.requests} requests, "
          f"{args.concurrency} connections, 1 server process each (median round) ==")
    print(f"{'request':22} {'server':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs off':>8}")
    for label in paths:
        baseline = sorted(runs[(label, "audit off")])[len(runs[(label, "audit off")]) // 2][0]
        for name in SERVERS:
            rps, p50, p99 = sorted(runs[(label, name)])[len(runs[(label, name)]) // 2]
            print(f"{label:22} {name:10} {rps:9.0f} {p50:8.2f} {p99:8.2f} {rps / baseline:8.1%}")
    print(f"\nAuditEvents stored by the audited server: {stored} for {sent['audit on']} requests "
          f"(the other server: {audit_events(urls['audit off'])})")
    cpu, wall = flush_cost(workdir)
    read_rps = sorted(runs[("read by id", "audit off")])[len(runs[("read by id", "audit off")]) // 2][0]
    print(f"writing one read's AuditEvent: {cpu:.0f} us CPU ({wall:.0f} us wall, with the commits); one read "
          f"costs ~{1e6 / read_rps:.0f} us of server time at {read_rps:.0f} req/s, so the trail adds "
          f"~{cpu * read_rps / 1e6:.0%} CPU to a read")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
