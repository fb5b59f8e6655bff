"""National-scale load test (issue 14): 50,000 CHWs sending 20 records a day (1,000,000 records a
day) with a 10x morning peak, through 2 API processes and 2 delivery workers sharing PostgreSQL
and Redis, into a DHIS2 sandbox that answers in 200 ms and fails 10% of requests, while partner
EMR clients read and search; one API process and one worker are SIGKILLed mid-run and restarted.

    python -m bench.national_load [--scale 0.1 --scale 1.0] [--minutes 4] [--persons 1000]

**The day and the scale.** A day's *shape* is compressed into ``--minutes`` (4 by default: a
compression of 360x), its *rates* are not: ``--scale 1.0`` offers records at the national rate
(base 6.6 records/s, 66.1 during a two-hour morning peak at 07:00-09:00, which is 10x the rest
of the day; 11.6 records/s on average, 1,000,000 in a real day), ``--scale 0.1`` at a tenth of
it. A run therefore sends ``minutes / 1440`` of a day's records (2,778 at 1/1 in 4 minutes): compressing
the volume as well (a million records in minutes, thousands a second) would measure a backfill,
not a day of live traffic, and ``bench/backfill_bench.py`` does that.
By default both scales run, 1/10 first, and a table gives each figure and its growth (1/1 ÷ 1/10).

**The deployment.** A fresh PostgreSQL schema (the store) and Redis prefix (the queue); 2
``gateway serve`` processes (``delivery.in_process_worker: false``) and 2 ``gateway worker``
processes; the DHIS2 sandbox (``gateway sandbox dhis2``) as its own process with
``--latency-ms 200`` and 10% failures (5% DHIS2 500, 3% nginx 502/504, 2% connection resets;
half of them after DHIS2 stored the data, so the gateway does not learn it did). Delivery retries
after 2 s, doubling to 20 s; a killed worker's claims return after a 10 s lease.

**The load.** Before the clock starts, the CHW area and ``--persons`` households and children
(CHT documents) are ingested and delivered. Then each record is one CHT assessment of a child
(an Encounter, its Observations and a MedicationDispense; DHIS2: one event), POSTed alone to
``/ingest/cht`` at its scheduled time on one of the API processes in turn (a sender whose
process is down sends to the other one, as a load balancer would). Partner EMR clients (a client
with ``system/Patient.rs system/Observation.rs``) read at a fixed 15 requests/s, whatever the
scale: ``Patient/{id}``, ``Patient?identifier=``, ``Observation?subject=&_sort=-date&_count=20``.
At half of the day, API process 1 and worker 1 get SIGKILL; both are started again 5 s later.

**The figures.** Records/s offered (the schedule) and achieved (acknowledged ÷ time to the last
acknowledgement; and the best 10 s window); ingest latency; delivery lag = the time the DHIS2
sandbox first accepted the record's event (read from the sandbox, ``GET /sandbox/accepted/events``)
minus the time the sender got the ingest answer (just after the commit); read/search latency
under load; PostgreSQL bytes per record (schema size after the run minus after the preload,
divided by the records: every version, index row, audit row and DHIS2 write-back they caused),
extrapolated linearly to a million records; cores used by role, from /proc. The machine is
shared: the run prints its load average; the figures are as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from bench._ingest_served import REDIS_URL, UNLIMITED, _cpu_seconds
from bench.backfill_bench import PG_URL, fresh_store_url
from dhis2_sandbox import DEFAULT_TOKEN
from gateway.auth import hash_token, new_token
from gateway.connectors.dhis2.uids import derive_uid, resource_key
from gateway.store import ApiClient, open_store
from gateway.store.postgres import split_schema
from tests.dhis2 import cht_records as cht
from tests.support.processes import GatewayProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
NATIONAL_PER_DAY = 50_000 * 20
PEAK_HOURS = (7, 9)  # 07:00-09:00
PEAK_FACTOR = 10.0
NAMESPACE = "national"
READ_KINDS = ("read", "identifier", "obs-sorted")


@dataclass(frozen=True)
class Plan:
    """One run: the load scale, the compressed day and the deployment's delivery settings."""

    scale: float
    minutes: float
    persons: int = 1000
    reads_per_second: float = 15.0
    kill_at: float = 0.5  # share of the day
    down_for: float = 5.0  # seconds between the kill and the restart
    latency_ms: float = 200.0
    retry_initial: str = "2s"
    retry_max: str = "20s"
    lease: str = "10s"
    drain_timeout: float = 240.0
    senders: int = 128  # records in flight at most: the rest wait (and show as falling behind)

    @property
    def seconds(self) -> float:
        """Length of the compressed day."""
        return self.minutes * 60

    @property
    def base_rate(self) -> float:
        """Records/s outside the morning peak (the peak is ``PEAK_FACTOR`` times it)."""
        peak = PEAK_HOURS[1] - PEAK_HOURS[0]
        return NATIONAL_PER_DAY * self.scale / (((24 - peak) + peak * PEAK_FACTOR) * 3600)


def send_times(plan: Plan) -> list[float]:
    """Send times from the cumulative count of the hourly rates: record i goes when i + 0.5 are due."""
    hour = plan.seconds / 24
    rates = [plan.base_rate * (PEAK_FACTOR if PEAK_HOURS[0] <= h < PEAK_HOURS[1] else 1.0) for h in range(24)]
    times: list[float] = []
    due_before = 0.0  # records due at the start of hour h
    for h, rate in enumerate(rates):
        due_after = due_before + rate * hour
        i = len(times)
        while i + 0.5 <= due_after:
            times.append(h * hour + (i + 0.5 - due_before) / rate)
            i += 1
        due_before = due_after
    return times


@dataclass
class Sent:
    """One record: when it was due, when the API acknowledged it, and its DHIS2 event's UID."""

    due: float
    acked: float | None = None  # wall-clock time of the 200 answer
    latency: float | None = None
    event_uid: str | None = None
    attempts: int = 0


@dataclass
class Read:
    """One EMR request: kind, start (s from the load's start), latency, status (0: no answer)."""

    kind: str
    at: float
    latency: float
    status: int
    failed_over: bool = False


@dataclass
class Result:
    """What one run measured; the test asserts on its sets, the table prints its figures."""

    plan: Plan
    records: list[Sent]
    reads: list[Read]
    expected_events: set[str]
    accepted: dict[str, float]  # event UID -> first acceptance (wall clock), at the sandbox
    stored: dict[str, int]  # the sandbox's live rows by table
    persons_delivered: int
    kill_window: tuple[float, float]  # s from the load's start: the kill, and both restarted
    load_seconds: float
    bytes_per_record: float  # store growth per record, the audit's share left out
    audit_bytes: float  # store growth of the audit trail (every request's AuditEvent)
    cores: dict[str, float]
    peak_rss_mb: dict[str, float]
    machine_cores: float
    sandbox_faults: dict[str, int]
    dead_letters: int
    phases: dict[str, float]  # seconds spent starting, preloading, loading, draining

    @property
    def acked(self) -> list[Sent]:
        """Records the API acknowledged."""
        return [r for r in self.records if r.acked is not None]

    def lags(self) -> list[float]:
        """Seconds from acknowledgement to first acceptance at the sandbox, per delivered record."""
        return [self.accepted[r.event_uid] - r.acked for r in self.records
                if r.acked is not None and r.event_uid is not None and r.event_uid in self.accepted]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _config(folder: Path, store_url: str, prefix: str, sandbox_url: str, plan: Plan) -> Path:
    config = folder / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "store_url": store_url, "queue_url": REDIS_URL, "queue_prefix": prefix,
        "mappings_dir": str(MAPPINGS), "rate_limit": UNLIMITED,
        "sources": [{"name": "cht", "kind": "cht", "mapping": "cht"}],
        "delivery": {"in_process_worker": False, "lease": plan.lease, "poll_interval": "0.2s",
                     "drain_timeout": "2s",
                     "retry": {"initial_delay": plan.retry_initial, "max_delay": plan.retry_max, "max_age": "1h"}},
        "destinations": [{
            "name": "dhis2", "kind": "dhis2", "base_url": sandbox_url, "timeout": "10s", "batch_size": 100,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["Patient", "Encounter", "Observation", "MedicationDispense",
                                          "ServiceRequest"]},
            "options": {"mapping": str(MAPPINGS / "dhis2" / "chw-household-visit.yaml"), "uid_namespace": NAMESPACE,
                        "metadata_cache": str(folder / "dhis2-metadata.json")},
        }],
    }))  # fmt: skip
    return config


class Sandbox:
    """``gateway sandbox dhis2`` with 200 ms latency and 10% failures, in its own process."""

    def __init__(self, folder: Path, latency_ms: float, faults: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = ["--port", str(self.port), "--latency-ms", str(latency_ms), "--seed", "14"]
        if faults:
            args += ["--error-rate", "0.05", "--proxy-error-rate", "0.03", "--reset-rate", "0.02"]
        self.log = folder / "sandbox.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway", "sandbox", "dhis2", *args],
                                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip

    def wait_ready(self) -> None:
        """Return once the sandbox answers."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/sandbox/stats", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"the DHIS2 sandbox did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Terminate the sandbox process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _tokens(store_url: str) -> dict[str, str]:
    """Clients (as ``gateway clients create`` makes them): the CHT sender, a monitor, the partner EMR."""
    scopes = {"cht": ("ingest:cht",), "monitor": ("admin",), "emr": ("system/Patient.rs system/Observation.rs",)}
    store = open_store(store_url)  # migrates the fresh schema once, before any process starts
    tokens = {}
    try:
        for name, scope in scopes.items():
            tokens[name] = new_token()
            store.save_client(ApiClient(name, scope, datetime.now(UTC)), hash_token(tokens[name]))
    finally:
        store.close()
    return tokens


def pg_schema(store_url: str) -> str:
    """The schema a bench's PostgreSQL store URL names (``?schema=``)."""
    schema = split_schema(store_url)[1]
    if schema is None:
        raise ValueError("the bench's store URL names no schema")
    return schema


def _schema_bytes(store_url: str) -> int:
    schema = pg_schema(store_url)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _pg_client_ports(pids: list[int]) -> set[int]:
    """Local ports of the TCP connections to PostgreSQL (port 5432) that processes ``pids`` hold."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] in inodes and int(cols[2].rsplit(":", 1)[1], 16) == 5432:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _pg_backends(pids: list[int]) -> list[int]:
    """PIDs of the PostgreSQL backends serving processes ``pids`` (other work on the server excluded)."""
    ports = _pg_client_ports(pids)
    if not ports:
        return []
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL").fetchall()
    return [int(pid) for pid, port in rows if port in ports]


def _store_bytes(store_url: str) -> tuple[int, float]:
    """The schema's size in bytes, and the share of it taken by AuditEvent rows (each table's size split by
    its share of AuditEvent rows: the audit grows with requests, reads included, not with records)."""
    schema = pg_schema(store_url)
    audit = 0.0
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s AND column_name = 'rtype'",
            (schema,)).fetchall()]  # fmt: skip
        for table in tables:
            name = f'"{schema}"."{table}"'
            size, rows, audits = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass), count(*), count(*) FILTER (WHERE rtype = 'AuditEvent')"
                f" FROM {name}",
                (name,),
            ).fetchone() or (0, 0, 0)
            audit += size * audits / rows if rows else 0.0
    return _schema_bytes(store_url), audit


def _busy_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


class Deployment:
    """2 API processes and 2 workers on one configuration; CPU and RSS sampled per role, across restarts."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.config, self.folder = config, folder
        self.environ = {"DHIS2_PAT": DEFAULT_TOKEN}
        self.apis = [self._start("serve") for _ in range(2)]
        self.workers = [self._start("worker") for _ in range(2)]
        for api in self.apis:
            api.wait_ready(120)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.rss: dict[str, float] = {"api": 0.0, "worker": 0.0}
        self.backends: set[int] = set()

    def _start(self, command: str) -> GatewayProcess:
        return GatewayProcess(self.config, self.folder, self.environ, command=command)

    def sample(self) -> None:
        """Record each live process's CPU seconds and its resident memory per role."""
        live = []
        for role, group in (("api", self.apis), ("worker", self.workers)):
            for proc in group:
                if proc.process.poll() is None:
                    live.append(proc.process.pid)
                    self.cpu[proc.process.pid] = (role, _cpu_seconds(proc.process.pid))
                    self.rss[role] = max(self.rss[role], _rss_mb(proc.process.pid))
        self.backends.update(_pg_backends(live))
        for pid in self.backends:
            seconds = _cpu_seconds(pid)
            if seconds:  # an ended backend reads 0: keep its last sample
                self.cpu[pid] = ("postgresql", seconds)

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds used so far by API processes and by workers (killed ones up to their last sample)."""
        out = {"api": 0.0, "worker": 0.0, "postgresql": 0.0}
        for role, seconds in self.cpu.values():
            out[role] += seconds
        return out

    def kill_and_restart(self, down_for: float) -> None:
        """SIGKILL API process 1 and worker 1, wait, start both again (blocking; run in a thread)."""
        self.sample()
        self.apis[0].kill()
        self.workers[0].kill()
        time.sleep(down_for)
        api = self._start("serve")
        self.workers[0] = self._start("worker")
        api.wait_ready(120)
        self.apis[0] = api

    def stop(self) -> None:
        """SIGTERM every process."""
        for proc in (*self.apis, *self.workers):
            proc.stop()


def _event_uid(answer: dict[str, Any]) -> str | None:
    for result in answer.get("results", []):
        for resource in result.get("resources", []):
            if resource.get("type") == "Encounter":
                return derive_uid(NAMESPACE, "EVENT", resource_key("Encounter", resource["id"]))
    return None


def _sender(token: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {token}"}, limits=limits)


async def _post(
    deployment: Deployment, client: httpx.AsyncClient, body: Any, turn: int, give_up: float
) -> dict[str, Any]:
    """POST to ``/ingest/cht`` on API ``turn % 2``, failing over to the other while one is down."""
    while True:
        api = deployment.apis[turn % 2]
        try:
            answer = await client.post(f"{api.url}/ingest/cht", json=body)
            if answer.status_code == 200:
                return dict(answer.json())
            problem = f"{answer.status_code} {answer.text[:300]}"
        except httpx.TransportError as exc:
            problem = type(exc).__name__
        if time.monotonic() > give_up:
            raise RuntimeError(f"ingest failed: {problem}")
        turn += 1
        await asyncio.sleep(0.05)


async def _destinations(deployment: Deployment, token: str) -> list[dict[str, Any]]:
    api = deployment.apis[1]
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        return list((await client.get(f"{api.url}/admin/destinations")).json()["destinations"])


async def _settled(deployment: Deployment, token: str) -> bool:
    """Nothing left to deliver, as ``GET /admin/destinations`` says."""
    rows = await _destinations(deployment, token)
    return all(r["depth"] == 0 and r["in_flight"] == 0 and r["lag_changes"] == 0 for r in rows)


async def _accepted(sandbox: Sandbox) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=60) as client:
        found = (await client.get(f"{sandbox.url}/sandbox/accepted/events")).json()
    return {uid: datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp() for uid, at in found.items()}


async def _preload(deployment: Deployment, tokens: dict[str, str], persons: int) -> list[str]:
    """The CHW area, households and children, in arrays of 100; the children's Patient ids."""
    docs = [cht.area(), *(doc for n in range(persons) for doc in (cht.household(n), cht.person(n)))]
    patients: list[str] = []
    give_up = time.monotonic() + 600
    async with _sender(tokens["cht"], 2) as client:
        for start in range(0, len(docs), 100):
            batch = [{"doc": d} for d in docs[start : start + 100]]
            answer = await _post(deployment, client, batch, start, give_up)
            for result in answer["results"]:
                patients += [r["id"] for r in result.get("resources", []) if r["type"] == "Patient"]
    return patients


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _reader(deployment: Deployment, token: str, targets: Targets, plan: Plan,
                  start: float, stop: asyncio.Event, reads: list[Read]) -> None:  # fmt: skip
    """Partner EMR requests at a fixed rate (each on its own task, so a slow answer delays no other),
    about the children visited most recently (whose records were acknowledged last)."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as client:

        async def one(n: int) -> None:
            kind = READ_KINDS[n % 3]
            patient, identifier = targets.pick(n // 3)
            path, params = {
                "read": (f"/fhir/Patient/{patient}", {}),
                "identifier": ("/fhir/Patient", {"identifier": identifier}),
                "obs-sorted": ("/fhir/Observation", {"subject": f"Patient/{patient}", "_sort": "-date",
                                                     "_count": "20"}),
            }[kind]  # fmt: skip
            began = time.monotonic()
            status, failed_over = 0, False
            for turn in (n, n + 1):  # a process that does not answer: the other one, as a load balancer would
                api = deployment.apis[turn % 2]
                try:
                    status = (await client.get(f"{api.url}{path}", params=params)).status_code
                    break
                except httpx.TransportError:
                    failed_over = True
            reads.append(Read(kind, began - start, time.monotonic() - began, status, failed_over))

        tasks: set[asyncio.Task[None]] = set()
        n = 0
        while not stop.is_set():
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / plan.reads_per_second - time.monotonic()))
        await asyncio.gather(*tasks)


@dataclass
class Targets:
    """The children the EMR asks about: by preload order, with the identifier system the CHT mapping gives them."""

    patients: list[str]
    system: str
    visited: list[int] = field(default_factory=list)  # children of acknowledged records, in order

    def pick(self, n: int) -> tuple[str, str]:
        """(Patient id, ``system|value``) of one of the last 50 children visited (any child before the first visit)."""
        recent = self.visited[-50:] or list(range(min(50, len(self.patients))))
        child = recent[n % len(recent)]
        return self.patients[child], f"{self.system}|{cht.person(child)['patient_id']}"


async def _targets(deployment: Deployment, token: str, patients: list[str]) -> Targets:
    """The preloaded children, and the identifier system of their CHT ``patient_id`` (read from the first)."""
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        patient = (await client.get(f"{deployment.apis[0].url}/fhir/Patient/{patients[0]}")).json()
    value = cht.person(0)["patient_id"]
    (system,) = {i["system"] for i in patient["identifier"] if i.get("value") == value}
    return Targets(patients, system)


async def _load(deployment: Deployment, sandbox: Sandbox, tokens: dict[str, str], plan: Plan,
                store_url: str, phases: dict[str, float]) -> Result:  # fmt: skip
    mark = time.monotonic()
    patients = await _preload(deployment, tokens, plan.persons)
    phases["preload"] = time.monotonic() - mark
    await _wait(lambda: _settled(deployment, tokens["monitor"]), plan.drain_timeout, "the preload's delivery")
    targets = await _targets(deployment, tokens["emr"], patients)
    phases["preload delivery"] = time.monotonic() - mark - phases["preload"]
    size_before, audit_before = _store_bytes(store_url)
    times = send_times(plan)
    records = [Sent(due=t) for t in times]
    reads: list[Read] = []
    stop_reading = asyncio.Event()
    gate = asyncio.Semaphore(plan.senders)
    deployment.sample()
    cpu_before = deployment.cpu_by_role()
    sandbox_cpu = _cpu_seconds(sandbox.process.pid)
    busy_before = _busy_ticks()
    start = time.monotonic()
    wall_offset = time.time() - start
    kill_window = [0.0, 0.0]

    async def send(i: int, record: Sent) -> None:
        await asyncio.sleep(max(0.0, start + record.due - time.monotonic()))
        async with gate:
            began = time.monotonic()
            doc = cht.assessment(i % plan.persons, refer="no", day=1 + i // plan.persons)
            answer = await _post(deployment, sender, {"doc": doc}, i, began + plan.drain_timeout)
            record.acked = time.time()
            record.latency = time.monotonic() - began
            record.event_uid = _event_uid(answer)
            targets.visited.append(i % plan.persons)

    async def kill() -> None:
        await asyncio.sleep(max(0.0, start + plan.kill_at * plan.seconds - time.monotonic()))
        kill_window[0] = time.monotonic() - start
        await asyncio.to_thread(deployment.kill_and_restart, plan.down_for)
        kill_window[1] = time.monotonic() - start

    async def sampler() -> None:
        while not stop_reading.is_set():
            await asyncio.to_thread(deployment.sample)
            await asyncio.sleep(1.0)

    reader = asyncio.create_task(_reader(deployment, tokens["emr"], targets, plan, start, stop_reading, reads))
    sampling = asyncio.create_task(sampler())
    killer = asyncio.create_task(kill())
    async with _sender(tokens["cht"], plan.senders) as sender:
        await asyncio.gather(*(send(i, r) for i, r in enumerate(records)))
    load_seconds = max((r.acked or 0.0) for r in records) - wall_offset - start if records else 0.0
    expected = {r.event_uid for r in records if r.event_uid is not None}

    async def delivered() -> bool:
        return expected <= set(await _accepted(sandbox))

    phases["load"] = time.monotonic() - start
    try:
        try:
            await _wait(delivered, plan.drain_timeout, "every record at the DHIS2 sandbox")
        except RuntimeError as exc:
            missing = expected - set(await _accepted(sandbox))
            rows = await _destinations(deployment, tokens["monitor"])
            logs = "".join(w.log.read_text()[-1500:] for w in deployment.workers)
            raise RuntimeError(
                f"{exc}: {len(missing)} of {len(expected)} missing; queue {rows}; workers: {logs}"
            ) from None
        await _wait(lambda: _settled(deployment, tokens["monitor"]), plan.drain_timeout, "the queue to settle")
        phases["drain"] = time.monotonic() - start - phases["load"]
    finally:
        await killer  # the restarted API process answers (the drain went on meanwhile)
        stop_reading.set()
        await reader
        await sampling
    deployment.sample()
    cpu_after = deployment.cpu_by_role()
    elapsed = time.monotonic() - start
    busy_after = _busy_ticks()
    cores = {role: (cpu_after[role] - cpu_before[role]) / elapsed for role in cpu_after}
    cores["dhis2 sandbox"] = (_cpu_seconds(sandbox.process.pid) - sandbox_cpu) / elapsed
    machine = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]) * (os.cpu_count() or 1)
    async with httpx.AsyncClient(timeout=60) as client:
        stats = (await client.get(f"{sandbox.url}/sandbox/stats")).json()
    size_after, audit_after = _store_bytes(store_url)
    return Result(
        plan=plan, records=records, reads=reads, expected_events=expected, accepted=await _accepted(sandbox),
        stored=stats["stored"], persons_delivered=int(stats["stored"]["tracked_entity"]),
        kill_window=(kill_window[0], kill_window[1]), load_seconds=load_seconds,
        bytes_per_record=(size_after - audit_after - size_before + audit_before) / max(1, len(records)),
        audit_bytes=audit_after - audit_before,
        cores=cores, peak_rss_mb=dict(deployment.rss), machine_cores=machine,
        sandbox_faults={k: int(v) for k, v in stats["faults"].items()},
        phases=phases,
        dead_letters=sum(int(row["dead"]) for row in await _destinations(deployment, tokens["monitor"])),
    )  # fmt: skip


def run(plan: Plan, store_url: str, prefix: str) -> Result:
    """Start the sandbox and the 4 gateway processes on ``store_url`` and Redis ``prefix``, run ``plan``, stop all."""
    with tempfile.TemporaryDirectory(prefix="national-") as tmp:
        folder = Path(tmp)
        mark = time.monotonic()
        tokens = _tokens(store_url)
        sandbox = Sandbox(folder, plan.latency_ms)
        try:
            deployment = Deployment(_config(folder, store_url, prefix, sandbox.url, plan), folder)
            sandbox.wait_ready()
            phases = {"start": time.monotonic() - mark}
            try:
                return asyncio.run(_load(deployment, sandbox, tokens, plan, store_url, phases))
            finally:
                deployment.stop()
        finally:
            sandbox.stop()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A fresh Redis key prefix, its keys deleted afterwards."""
    import redis

    name = f"bench:national:{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        for at in range(0, len(keys), 500):
            client.delete(*keys[at : at + 500])


def figures(result: Result) -> dict[str, float]:
    """The reported figures of one run, by row name."""
    plan, acked = result.plan, result.acked
    offered_mean = len(result.records) / plan.seconds
    by_window: dict[int, int] = {}
    first = min((r.acked for r in acked if r.acked is not None), default=0.0)
    for r in acked:
        assert r.acked is not None
        by_window[int((r.acked - first) // 10)] = by_window.get(int((r.acked - first) // 10), 0) + 1
    lags = result.lags()
    out = {
        "records sent": float(len(result.records)),
        "offered records/s (mean)": offered_mean,
        "offered records/s (peak)": plan.base_rate * PEAK_FACTOR,
        "achieved records/s (mean)": len(acked) / result.load_seconds if result.load_seconds else 0.0,
        "achieved records/s (best 10 s)": max(by_window.values(), default=0) / 10,
        "ingest latency p50 ms": 1000 * pct([r.latency or 0.0 for r in acked], 50),
        "ingest latency p99 ms": 1000 * pct([r.latency or 0.0 for r in acked], 99),
        "delivery lag p50 s": pct(lags, 50),
        "delivery lag p99 s": pct(lags, 99),
    }
    for kind in READ_KINDS:
        answered = [r.latency for r in result.reads if r.kind == kind and r.status == 200]
        out[f"{kind} p50 ms"] = 1000 * pct(answered, 50)
        out[f"{kind} p99 ms"] = 1000 * pct(answered, 99)
    out["reads answered 200 (%)"] = 100 * sum(r.status == 200 for r in result.reads) / max(1, len(result.reads))
    out["PG bytes/record (no audit)"] = result.bytes_per_record
    out["PG GB per 1M records (no audit)"] = result.bytes_per_record * 1e6 / 1e9
    out["PG audit bytes/request"] = result.audit_bytes / max(1, len(result.reads) + len(result.records))
    for role, cores in result.cores.items():
        out[f"cores: {role}"] = cores
    out["cores: whole machine (all work)"] = result.machine_cores
    busy = result.phases.get("load", 0.0) + result.phases.get("drain", 0.0)
    for role in ("api", "worker", "postgresql"):
        out[f"CPU ms/record: {role}"] = 1000 * result.cores.get(role, 0.0) * busy / max(1, len(result.records))
    for role, rss in result.peak_rss_mb.items():
        out[f"peak RSS per {role} MB"] = rss
    return out


def print_table(results: list[Result]) -> None:
    """Each figure per scale, and its growth against the first (smallest) scale."""
    rows = [figures(r) for r in results]
    head = ["figure", *(f"scale {r.plan.scale:g}" for r in results)]
    if len(results) > 1:
        head.append(f"ratio {results[-1].plan.scale:g}/{results[0].plan.scale:g}")
    print(f"\n{head[0]:<32}" + "".join(f"{h:>14}" for h in head[1:]))
    for name in rows[0]:
        cells = [rows[i][name] for i in range(len(rows))]
        line = f"{name:<32}" + "".join(f"{c:>14.3g}" if abs(c) < 1000 else f"{c:>14,.0f}" for c in cells)
        if len(cells) > 1:
            line += f"{cells[-1] / cells[0]:>13.2f}x" if cells[0] else f"{'-':>14}"
        print(line)


def describe(result: Result) -> None:
    """The run's conditions and its checks, on a few lines."""
    plan, lost = result.plan, result.expected_events - set(result.accepted)
    print(f"  scale {plan.scale:g}: {len(result.records)} records over a {plan.minutes:g}-minute day "
          f"(compression {1440 / plan.minutes:.0f}x), acked {len(result.acked)}, delivered "
          f"{len(result.expected_events) - len(lost)}, lost {len(lost)}, sandbox events {result.stored['event']}, "
          f"tracked entities {result.persons_delivered}/{plan.persons}; kill at {result.kill_window[0]:.0f} s, "
          f"both back at {result.kill_window[1]:.0f} s; reads {len(result.reads)}; "
          f"(statuses {dict(Counter(r.status for r in result.reads))}, "
          f"{sum(r.failed_over for r in result.reads)} failed over); dead letters {result.dead_letters}; "
          f"phases (s) {', '.join(f'{k} {v:.0f}' for k, v in result.phases.items())}; "
          f"sandbox faults {sum(v for k, v in result.sandbox_faults.items() if k.startswith('fault'))}"
          f"/{result.sandbox_faults.get('requests', 0)} requests", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run each scale on a fresh schema and prefix; print the conditions and the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, action="append", help="share of the national load (repeatable)")
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the compressed day")
    parser.add_argument("--persons", type=int, default=1000, help="children the CHWs visit")
    args = parser.parse_args(argv)
    scales = args.scale or [0.1, 1.0]
    print(f"national load: 1,000,000 records/day x scale, day compressed into {args.minutes:g} min; "
          f"load average {os.getloadavg()}", flush=True)  # fmt: skip
    results = []
    for scale in scales:
        plan = Plan(scale=scale, minutes=args.minutes, persons=args.persons)
        with tempfile.TemporaryDirectory() as tmp, fresh_store_url(Path(tmp), True, "national") as url:
            with redis_prefix() as prefix:
                results.append(run(plan, url, prefix))
        describe(results[-1])
        print(f"  load average after: {os.getloadavg()}", flush=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
