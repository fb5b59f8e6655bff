"""Read and search benchmark (issue 2).

1. FHIR read-by-id through the gateway (uvicorn, one process, SQLite store, bearer
   auth) next to a bare FastAPI endpoint returning the same bytes: the framework
   ceiling, measured in the same run with the same load generator.
2. Search latency over 100,000 stored Observations on SQLite and PostgreSQL: query
   parsing, SQL and Bundle assembly, as the search handler does them.

Run: ``python -m bench.read_search [--observations N]``.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench._http_load import run_load
from gateway.auth import hash_token, new_token
from gateway.fhir import bundles
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import ApiClient, ResourceStore, open_store
from gateway.store.sql import SqlStore

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
CODES = ["8867-4", "8310-5", "29463-7", "8480-6", "8462-4", "59261-8", "56051-6", "LA6576-8", "2345-7", "718-7"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if sock.recv(12).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def bench_reads(workdir: Path, total: int, concurrency: int, rounds: int) -> list[tuple[str, float, float, float]]:
    url = f"sqlite:///{workdir}/read.db"
    store = open_store(url)
    token = new_token()
    store.save_client(ApiClient("bench", ("system/*.cruds",), datetime.now(UTC)), hash_token(token))
    with store.transaction() as tx:
        patient = tx.create({"resourceType": "Patient", "name": [{"family": "Achieng", "given": ["Mary"]}],
                             "gender": "female", "birthDate": "1990-04-02",
                             "identifier": [{"system": "urn:cht:person", "value": "abc-123"}],
                             "address": [{"district": "Kilifi", "city": "Malindi"}]}).resource
    store.close()
    body_file = workdir / "patient.json"
    body_file.write_bytes(patient.content)
    path = f"/fhir/Patient/{patient.id}"
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    servers = {"bare FastAPI (ceiling)": ("bare", str(body_file)), "gateway read": ("gateway", url)}
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    try:
        for name, (kind, arg) in servers.items():
            port = free_port()
            procs[name] = (subprocess.Popen([sys.executable, "-m", "bench._servers", kind, arg, str(port)]), port)
            wait_ready(port, path)
            run_load("127.0.0.1", port, path, headers, total=1000, concurrency=concurrency)  # warm-up
        # Alternate the two servers over several rounds and keep each one's median round,
        # so a burst of other load on the machine does not decide the ratio.
        for _ in range(rounds):
            for name, (_, port) in procs.items():
                result = run_load("127.0.0.1", port, path, headers, total=total, concurrency=concurrency)
                assert result.errors == 0, f"{name}: {result.errors} non-200 answers"
                runs[name].append((result.rps, result.p50, result.pct(99)))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)
    rows = []
    for name, results in runs.items():
        rps, p50, p99 = sorted(results)[len(results) // 2]
        rows.append((name, rps, p50, p99))
    return rows


def load_observations(store: ResourceStore, count: int, patients: int) -> list[str]:
    rng = random.Random(7)
    patient_ids = [str(uuid.uuid4()) for _ in range(patients)]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with store.transaction() as tx:
        for pid in patient_ids:
            tx.update({"resourceType": "Patient", "id": pid, "name": [{"family": f"F{pid[:6]}"}]})
    done = 0
    while done < count:
        with store.transaction() as tx:
            for _ in range(min(2000, count - done)):
                pid = rng.choice(patient_ids)
                when = start + timedelta(minutes=rng.randrange(0, 2 * 365 * 24 * 60))
                tx.create({
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                              "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(CODES)}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "valueQuantity": {"value": round(rng.uniform(9, 40), 1), "unit": "cm",
                                      "system": "http://unitsofmeasure.org", "code": "cm"},
                })
                done += 1
    return patient_ids


def search_queries(patient_ids: list[str], rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    pid = rng.choice(patient_ids)
    return {
        "patient's observations": [("subject", f"Patient/{pid}")],
        "patient + code": [("patient", pid), ("code", f"http://loinc.org|{rng.choice(CODES)}")],
        "code + date range, total": [("code", rng.choice(CODES)), ("date", "ge2024-03-01"), ("date", "lt2024-04-01")],
        "code, newest 20": [("code", rng.choice(CODES)), ("_sort", "-date"), ("_count", "20")],
        "category, 20, total": [("category", "vital-signs"), ("_count", "20")],
        "MUAC < 11.5 cm": [("value-quantity", "lt11.5"), ("_count", "20"), ("_total", "none")],
        "_lastUpdated desc": [("_sort", "-_lastUpdated"), ("_count", "20"), ("_total", "none")],
    }


def bench_search(store: ResourceStore, patient_ids: list[str], rounds: int) -> dict[str, tuple[float, float]]:
    parser = QueryParser(default_registry(), 20, 1000)
    rng = random.Random(11)
    timings: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, items in search_queries(patient_ids, rng).items():
            start = time.perf_counter()
            query = parser.parse("Observation", items)
            result = store.search(query)
            bundles.searchset("http://bench/fhir", result.resources, total=result.total, links=[])
            timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)
    return {name: (statistics.median(t), sorted(t)[int(0.99 * (len(t) - 1))]) for name, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--read-rounds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", choices=["reads", "search"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-read-"))

    if args.only != "search":
        print(f"\n== FHIR read by id: {args.read_rounds} alternating rounds of {args.reads} requests, "
              f"{args.concurrency} connections, 1 server process each (median round) ==")
        rows = bench_reads(workdir, args.reads, args.concurrency, args.read_rounds)
        ceiling = rows[0][1]
        print(f"{'server':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs ceiling':>11}")
        for name, rps, p50, p99 in rows:
            print(f"{name:28} {rps:9.0f} {p50:8.2f} {p99:8.2f} {rps / ceiling:10.0%}")
        if args.only == "reads":
            return

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    backends = [("SQLite", f"sqlite:///{workdir}/search.db"), ("PostgreSQL", f"{PG_URL}?schema={schema}")]
    results: dict[str, dict[str, tuple[float, float]]] = {}
    try:
        for label, url in backends:
            store = open_store(url)
            start = time.perf_counter()
            patient_ids = load_observations(store, args.observations, 1000)
            load_s = time.perf_counter() - start
            print(f"\nloaded {args.observations} Observations into {label} in {load_s:.1f}s "
                  f"({args.observations / load_s:.0f} resources/s, one transaction per 2,000)")
            if label == "PostgreSQL":
                with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as conn:
                    # A bulk load leaves the visibility map empty until autovacuum runs; vacuum
                    # now so the numbers are those of a database in its steady state.
                    conn.execute("VACUUM ANALYZE")
            else:
                assert isinstance(store, SqlStore)  # ANALYZE on the store's own connection
                with store.transaction() as tx:
                    tx.cur.execute("ANALYZE")
            results[label] = bench_search(store, patient_ids, args.rounds)
            store.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    print(f"\n== Search over {args.observations} Observations ({args.rounds} rounds each; goal p99 <= 50 ms) ==")
    print(f"{'query':28} {'SQLite p50':>11} {'p99':>8} {'PG p50':>9} {'p99':>8}")
    for name in results["SQLite"]:
        s50, s99 = results["SQLite"][name]
        p50, p99 = results["PostgreSQL"][name]
        print(f"{name:28} {s50:11.2f} {s99:8.2f} {p50:9.2f} {p99:8.2f}")


if __name__ == "__main__":
    main()
