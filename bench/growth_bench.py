"""Growth benchmark (issue 14): what each figure costs as the store grows 10k → 100k → 1M resources.

Loads CHW-like data (1 Patient : 1 Encounter : 8 Observations, ids as the mapping makes them:
random-looking UUIDs) into one SQLite and one PostgreSQL store, step by step, and after each
step prints per backend: the load rate of that step, bytes per resource, the WAL, read by id
p50/p99 and p50/p99 of a realistic query for every search parameter the CapabilityStatement
advertises for the CHW types (Patient, Encounter, Observation), with the page bounded
(``_count=20``), the default total, ``_total=estimate``, ``_total=accurate`` and ``_total=none``
side by side, sorts and chains. The last table is the growth from the second-largest to the
largest size per figure; a figure that worsens by more than 1.5x is flagged.

Run: ``python -m bench.growth_bench [--sizes 10000 100000 1000000] [--backends sqlite postgresql]``
(10M on demand: ``--sizes 10000 100000 1000000 10000000``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.read_search import CODES, PG_URL
from gateway.fhir import bundles
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import ResourceStore, open_store
from gateway.store.sql import SqlStore

GIVEN = ["Mary", "John", "Grace", "Peter", "Achieng", "Otieno", "Wanjiru", "Kamau", "Amina", "Baraka",
         "Neema", "Juma", "Zawadi", "Musa", "Halima", "Daudi", "Faith", "Joseph", "Esther", "Samuel"]
ID_SYSTEM = "urn:cht:person"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
START = datetime(2024, 1, 1, tzinfo=UTC)
MINUTES = 2 * 365 * 24 * 60
#: resources per transaction (as a large ingest upload commits them)
BATCH = 2000
FLAG = 1.5


@dataclass
class Loaded:
    """What the queries pick their values from (a sample of what was loaded)."""

    patients: list[tuple[str, str, str]] = field(default_factory=list)  # (id, identifier value, family)
    encounters: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    total: int = 0
    last_batch: float = 0.0  # epoch seconds when the last transaction began


def group(rng: random.Random, n: int) -> list[dict[str, object]]:
    """One household visit: a Patient, an Encounter and 8 Observations."""
    pid = str(uuid.uuid4())
    eid = str(uuid.uuid4())
    when = START + timedelta(minutes=rng.randrange(MINUTES))
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    family = f"Fam{rng.randrange(50_000):05d}"
    birth = START - timedelta(days=rng.randrange(80 * 365))
    out: list[dict[str, object]] = [
        {"resourceType": "Patient", "id": pid,
         "identifier": [{"system": ID_SYSTEM, "value": f"P{n:09d}"}],
         "name": [{"family": family, "given": [rng.choice(GIVEN)]}],
         "gender": rng.choice(["female", "male"]), "birthDate": birth.strftime("%Y-%m-%d"),
         "address": [{"district": f"D{rng.randrange(40)}"}]},
        {"resourceType": "Encounter", "id": eid, "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
         "subject": {"reference": f"Patient/{pid}"}, "period": {"start": stamp, "end": stamp}},
    ]
    for code in rng.sample(CODES, 8):
        out.append({
            "resourceType": "Observation", "id": str(uuid.uuid4()), "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{eid}"},
            "effectiveDateTime": stamp,
            "valueQuantity": {"value": round(rng.uniform(9, 40), 1), "unit": "cm",
                              "system": "http://unitsofmeasure.org", "code": "cm"},
        })
    return out


def load(store: ResourceStore, loaded: Loaded, upto: int, rng: random.Random) -> float:
    """Load groups until the store holds ``upto`` resources; the seconds it took."""
    started = time.perf_counter()
    while loaded.total < upto:
        loaded.last_batch = time.time()
        with store.transaction() as tx:
            for _ in range(min(BATCH, upto - loaded.total) // 10 or 1):
                n = loaded.total // 10
                resources = group(rng, n)
                for resource in resources:
                    tx.update(resource)
                loaded.total += len(resources)
                if rng.random() < 0.02 or len(loaded.patients) < 50:  # a sample to query by
                    patient = resources[0]
                    loaded.patients.append((str(patient["id"]), f"P{n:09d}",
                                            patient["name"][0]["family"]))  # type: ignore[index]
                    loaded.encounters.append(str(resources[1]["id"]))
                    loaded.observations.append(str(resources[2]["id"]))
    return time.perf_counter() - started


def queries(loaded: Loaded, rng: random.Random) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """One realistic query per advertised parameter of the CHW types, values drawn afresh each round."""
    pid, ident, family = rng.choice(loaded.patients)
    eid = rng.choice(loaded.encounters)
    code = rng.choice(CODES)
    month = START + timedelta(days=30 * rng.randrange(23))
    lo, hi = month.strftime("%Y-%m-%d"), (month + timedelta(days=30)).strftime("%Y-%m-%d")
    day = (START + timedelta(days=rng.randrange(729))).strftime("%Y-%m-%d")
    recent = datetime.fromtimestamp(loaded.last_batch - 1, UTC)
    born = (START - timedelta(days=365 * rng.randrange(1, 79))).strftime("%Y-%m")
    p20 = [("_count", "20")]
    return {
        "Patient?_id": ("Patient", [("_id", pid)]),
        "Patient?identifier": ("Patient", [("identifier", f"{ID_SYSTEM}|{ident}")]),
        "Patient?name": ("Patient", [("name", family)]),
        "Patient?family": ("Patient", [("family", family), *p20]),
        "Patient?given (1/20)": ("Patient", [("given", rng.choice(GIVEN)), *p20]),
        "Patient?given, est.": ("Patient", [("given", rng.choice(GIVEN)), ("_total", "estimate"), *p20]),
        "Patient?given, accurate": ("Patient", [("given", rng.choice(GIVEN)), ("_total", "accurate"), *p20]),
        "Patient?birthdate (month)": ("Patient", [("birthdate", born), *p20]),
        "Patient?gender (1/2)": ("Patient", [("gender", "female"), *p20]),
        "Patient?gender, none": ("Patient", [("gender", "female"), ("_total", "none"), *p20]),
        "Patient?_sort=birthdate": ("Patient", [("_sort", "birthdate"), ("_total", "none"), *p20]),
        "Patient?_sort=-birthdate": ("Patient", [("_sort", "-birthdate"), ("_total", "none"), *p20]),
        "Patient?_sort=family": ("Patient", [("_sort", "family"), ("_total", "none"), *p20]),
        "Patient?gender&_sort=name": ("Patient", [("gender", "male"), ("_sort", "name"), ("_total", "none"), *p20]),
        "Patient?_lastUpdated (last batch)": ("Patient", [("_lastUpdated", "ge" + recent.isoformat()), *p20]),
        "Patient?_sort=-_lastUpdated": ("Patient", [("_sort", "-_lastUpdated"), ("_total", "none"), *p20]),
        "Encounter?subject": ("Encounter", [("subject", f"Patient/{pid}")]),
        "Encounter?patient": ("Encounter", [("patient", pid)]),
        "Encounter?date (day)": ("Encounter", [("date", day), *p20]),
        "Encounter?date, -date": ("Encounter", [("date", f"ge{lo}"), ("date", f"lt{hi}"), ("_sort", "-date"),
                                                ("_total", "none"), *p20]),
        "Encounter?_sort=-date": ("Encounter", [("_sort", "-date"), ("_total", "none"), *p20]),
        "Encounter?patient.identifier": ("Encounter", [("patient.identifier", f"{ID_SYSTEM}|{ident}")]),
        "Observation?_id": ("Observation", [("_id", rng.choice(loaded.observations))]),
        "Observation?subject": ("Observation", [("subject", f"Patient/{pid}")]),
        "Observation?patient+code": ("Observation", [("patient", pid), ("code", f"http://loinc.org|{code}")]),
        "Observation?encounter": ("Observation", [("encounter", f"Encounter/{eid}")]),
        "Observation?subject:Patient.name": ("Observation", [("subject:Patient.name", family), *p20]),
        "Observation?code (default)": ("Observation", [("code", code), *p20]),
        "Observation?code, est.": ("Observation", [("code", code), ("_total", "estimate"), *p20]),
        "Observation?code, accurate": ("Observation", [("code", code), ("_total", "accurate"), *p20]),
        "Observation?code, none": ("Observation", [("code", code), ("_total", "none"), *p20]),
        "Observation?code+date (default)": ("Observation", [("code", code), ("date", f"ge{lo}"), ("date", f"lt{hi}"),
                                                            *p20]),
        "Observation?code+date, accurate": ("Observation", [("code", code), ("date", f"ge{lo}"), ("date", f"lt{hi}"),
                                                            ("_total", "accurate"), *p20]),
        "Observation?code,-date,none": ("Observation", [("code", code), ("_sort", "-date"), ("_total", "none"), *p20]),
        "Observation?code,-date (default)": ("Observation", [("code", code), ("_sort", "-date"), *p20]),
        "Observation?date (day)": ("Observation", [("date", day), *p20]),
        "Observation?category (default)": ("Observation", [("category", "vital-signs"), *p20]),
        "Observation?category, none": ("Observation", [("category", "vital-signs"), ("_total", "none"), *p20]),
        "Observation?value-quantity<11.5": ("Observation", [("value-quantity", "lt11.5"), ("_total", "none"), *p20]),
        "Observation?value-quantity<11.5 (d)": ("Observation", [("value-quantity", "lt11.5"), *p20]),
        "Observation?_sort=-_lastUpdated": ("Observation", [("_sort", "-_lastUpdated"), ("_total", "none"), *p20]),
        "Observation?_sort=-date": ("Observation", [("_sort", "-date"), ("_total", "none"), *p20]),
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank) of samples in ms."""
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def timed(fn: Callable[[], object], rounds: int, budget_s: float) -> list[float]:
    """Run ``fn`` ``rounds`` times (fewer, at least 10, once ``budget_s`` is spent); the ms each took."""
    out: list[float] = []
    spent = 0.0
    while len(out) < rounds and (len(out) < 10 or spent < budget_s):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        spent += took
        out.append(took * 1000)
    return out


def measure(store: ResourceStore, loaded: Loaded, rounds: int, budget_s: float) -> dict[str, tuple[float, float]]:
    """Read by id and every query: p50/p99 in ms."""
    rng = random.Random(11)
    parser = QueryParser(default_registry(), 20, 1000)
    out: dict[str, tuple[float, float]] = {}

    def read() -> object:
        kind, ids = rng.choice((("Patient", [p[0] for p in loaded.patients]), ("Observation", loaded.observations)))
        found = store.read(kind, rng.choice(ids))
        assert found is not None
        return found

    read()
    out["read by id"] = percentiles(timed(read, rounds * 4, budget_s))
    for name in queries(loaded, rng):
        def run(name: str = name) -> object:
            rtype, items = queries(loaded, rng)[name]
            result = store.search(parser.parse(rtype, items))
            return bundles.searchset("http://bench/fhir", result.resources, total=result.total, links=[],
                                     included=result.included)
        run()
        out[name] = percentiles(timed(run, rounds, budget_s))
    return out


def settle(label: str, store: ResourceStore, schema: str) -> None:
    """Statistics as a running system has them (autovacuum / ``PRAGMA optimize``)."""
    if label == "PostgreSQL":
        with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}") as conn:
            conn.execute("VACUUM ANALYZE")
    else:
        assert isinstance(store, SqlStore)
        with store.transaction() as tx:
            tx.cur.execute("ANALYZE")


def disk(label: str, url: str, schema: str, wal_from: list[str]) -> tuple[int, float]:
    """(database bytes, WAL MB): the SQLite file and its -wal file; PostgreSQL's tables with their
    indexes and TOAST, and the WAL written since ``wal_from``."""
    if label == "SQLite":
        path = url.removeprefix("sqlite:///")
        wal = path + "-wal"
        return os.path.getsize(path), (os.path.getsize(wal) if os.path.exists(wal) else 0) / 1e6
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        size = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'", (schema,)).fetchone()
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert size is not None and lsn is not None
        written = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (lsn[0], wal_from[0])).fetchone()
        assert written is not None
        wal_from[0] = lsn[0]
        return int(size[0]), float(written[0]) / 1e6


def pg_lsn() -> str:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])


Row = dict[str, tuple[float, float]]


def run_backend(label: str, sizes: list[int], rounds: int, budget_s: float, workdir: Path) -> list[tuple[int, Row]]:
    """Load and measure one backend at each size; per size the figures (name -> (a, b))."""
    schema = f"bench_growth_{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{workdir}/growth.db" if label == "SQLite" else f"{PG_URL}?schema={schema}"
    store = open_store(url)
    loaded = Loaded()
    rng = random.Random(7)
    wal_from = [pg_lsn()] if label == "PostgreSQL" else [""]
    steps: list[tuple[int, Row]] = []
    try:
        for size in sizes:
            before = loaded.total
            seconds = load(store, loaded, size, rng)
            added = loaded.total - before
            size_bytes, wal_mb = disk(label, url, schema, wal_from)
            settle(label, store, schema)
            row: Row = {
                "load resources/s": (added / seconds, 0.0),
                "bytes/resource": (size_bytes / loaded.total, 0.0),
                # SQLite: the -wal file on disk after the step; PostgreSQL: WAL bytes written per resource.
                "WAL MB" if label == "SQLite" else "WAL bytes/resource":
                    (wal_mb, 0.0) if label == "SQLite" else (wal_mb * 1e6 / added, 0.0),
            }
            row.update(measure(store, loaded, rounds, budget_s))
            steps.append((loaded.total, row))
            print(f"{label}: {loaded.total} resources, {added / seconds:.0f}/s, {size_bytes / loaded.total:.0f} B each,"
                  f" WAL {wal_mb:.1f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
            print_step(label, loaded.total, row)
    finally:
        store.close()
        if label == "PostgreSQL":
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return steps


def print_step(label: str, total: int, row: Row) -> None:
    print(f"\n== {label} at {total:,} resources (ms unless said; goal: search p99 <= 50 ms) ==")
    print(f"{'figure':36} {'p50 / value':>12} {'p99':>9}")
    for name, (a, b) in row.items():
        flag = "  > 50 ms" if b > 50 else ""
        print(f"{name:36} {a:12.2f} {b:9.2f}{flag}")
    print(flush=True)


def growth(label: str, steps: list[tuple[int, Row]]) -> None:
    """Per figure: p50 (or the value) and p99 at each size, and their ratios from the second-largest
    to the largest size (worse / better; flagged above ``FLAG``)."""
    if len(steps) < 2:
        return
    (n0, before), (n1, after) = steps[-2], steps[-1]
    print(f"\n== {label}: growth {n0:,} → {n1:,} resources (ratio = how many times worse; flag > {FLAG}x) ==")
    sizes = "".join(f" {f'p50 {n:,}':>12}" for n, _ in steps) + "".join(f" {f'p99 {n:,}':>12}" for n, _ in steps)
    print(f"{'figure':36}{sizes} {'p50 x':>7} {'p99 x':>7}")
    for name in after:
        single = name in ("load resources/s", "bytes/resource", "WAL MB", "WAL bytes/resource")
        values = "".join(f" {r[name][0]:12.2f}" for _, r in steps)
        values += "".join(f" {'':>12}" if single else f" {r[name][1]:12.2f}" for _, r in steps)
        ratios = []
        for pick in (0,) if single else (0, 1):
            was, now = before[name][pick], after[name][pick]
            ratios.append((was / now if name == "load resources/s" else now / was) if was and now else 0.0)
        shown = "".join(f" {r:6.2f}x" for r in ratios) + ("" if len(ratios) == 2 else f" {'':>7}")
        print(f"{name:36}{values}{shown}{'  !' if max(ratios) > FLAG else ''}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per query at most (>= 10 rounds)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; sizes {args.sizes}", flush=True)
    results = {}
    for backend in args.backends:
        label = "SQLite" if backend == "sqlite" else "PostgreSQL"
        results[label] = run_backend(label, args.sizes, args.rounds, args.budget, workdir)
    for label, steps in results.items():
        growth(label, steps)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
