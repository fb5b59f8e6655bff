"""Pull benchmark (issue 15): records/s of pulling each source API's stand-in, next to posting the
same records to ``POST /ingest/{source}`` in the same run.

For each pulled kind (ODK Central OData with ``$expand=*``, CommCare Form API, CHT ``_changes``,
Kobo data endpoint) the stand-in (``source_sandbox``) holds ``--records`` records made from the
shipped golden inputs and the shared ODK samples (each with its own ids), served by uvicorn on
loopback. Two rows per kind, each on a fresh SQLite store:

* ``pull``: ``gateway sources pull`` as the scheduler runs it: GET pages of ``--page`` records,
  ingest each page (map, validate, store; one transaction per 100 records), save the cursor.
* ``push``: the same records POSTed as JSON arrays of ``--page`` records to the gateway app's
  ``/ingest/{source}`` over loopback HTTP (uvicorn), as a sender with a backlog would.

The ratio is pull / push: what reading an API costs beyond the ingest both share. Wall-clock
time (the store commits in another thread); the machine is shared, so rows are best of ``--runs``.

Run: ``python -m bench.pull_bench [--records N] [--page N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.ingest import IngestService, MappingRegistry, SourceConfig
from gateway.pull import PullRunner
from gateway.search import QueryParser, default_registry
from gateway.settings import RateLimitSettings, Settings
from gateway.store import ApiClient, open_store
from source_sandbox import SourceSandbox, odk_sample_rows

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
SECRETS = {"PW": "pull-secret", "CC": "gateway@example.org:cc-api-key", "KOBO": "kobo-token"}


def _golden(set_name: str, case: str) -> Any:
    return json.loads((MAPPINGS / set_name / "tests" / f"{case}.input.json").read_text(encoding="utf-8"))


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def odk_record(n: int) -> dict[str, Any]:
    row = copy.deepcopy(odk_sample_rows()[0])
    row["__id"] = row["meta"]["instanceID"] = f"uuid:{_uuid(n)}"
    row["visit"]["household_id"] = f"HH-{n:06d}"
    for i, member in enumerate(row["household"]["member"]):
        member["__id"] = f"{n:020d}{i:020d}"
    return row


def commcare_record(n: int) -> dict[str, Any]:
    form = copy.deepcopy(_golden("commcare", "tb-dot-visit"))
    form["id"] = form["form"]["meta"]["instanceID"] = _uuid(n)
    return dict(form)


def cht_record(n: int) -> dict[str, Any]:
    doc = copy.deepcopy(_golden("cht", "report-data-record-assessment")["doc"])
    doc["_id"] = _uuid(n)
    return dict(doc)


def kobo_record(n: int) -> dict[str, Any]:
    row = copy.deepcopy(_golden("kobo", "hypertension-visit"))
    row["meta/rootUuid"] = row["meta/instanceID"] = f"uuid:{_uuid(n)}"
    row["_uuid"] = _uuid(n)
    return dict(row)


def load(sandbox: SourceSandbox, kind: str, count: int) -> list[dict[str, Any]]:
    """Put ``count`` records into the stand-in; return them as a sender would POST them."""
    pushed: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        if kind == "odk":
            pushed.append(sandbox.odk.submit(4, "chw_household_visit", odk_record(n)))
        elif kind == "commcare":
            pushed.append(sandbox.commcare.submit_form("bench", commcare_record(n)))
        elif kind == "cht":
            pushed.append({"doc": sandbox.cht.put(cht_record(n))})
        else:
            pushed.append(sandbox.kobo.submit("asset", kobo_record(n)))
    return copy.deepcopy(pushed)


def sources(url: str, page: int) -> list[SourceConfig]:
    basic = {"type": "basic", "username": "gateway@example.org", "secret_env": "PW"}
    common = {"base_url": url, "page_size": page}
    return [
        SourceConfig(name="odk", kind="odk-central", mapping="odk",
                     pull={**common, "auth": basic, "project": 4, "form": "chw_household_visit"}),
        SourceConfig(name="commcare", kind="commcare-api", mapping="commcare", pull={
            **common, "domain": "bench", "auth": {"type": "api_token", "scheme": "ApiKey", "secret_env": "CC"}}),
        SourceConfig(name="cht", kind="cht-changes", mapping="cht", pull={**common, "auth": basic}),
        SourceConfig(name="kobo", kind="kobo-api", mapping="kobo", pull={
            **common, "asset": "asset", "auth": {"type": "api_token", "scheme": "Token", "secret_env": "KOBO"}}),
    ]  # fmt: skip


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def pull_rate(kind: str, count: int, page: int) -> float:
    """Records/s of one pull of ``count`` records from a fresh stand-in into a fresh store."""
    sandbox = SourceSandbox()
    load(sandbox, kind, count)
    with tempfile.TemporaryDirectory() as tmp, serve(sandbox.app()) as url:
        store = open_store(f"sqlite:///{tmp}/pull.db")
        ingest = IngestService(store, QueryParser(default_registry(), 20, 1000),
                               MappingRegistry(MAPPINGS, sources(url, page)))  # fmt: skip
        try:
            runner = PullRunner(ingest, store, environ=SECRETS)
            started = time.perf_counter()
            report = asyncio.run(runner.pull(kind))
            elapsed = time.perf_counter() - started
        finally:
            ingest.close()
            store.close()
    if report.records != count or report.quarantined:
        raise SystemExit(f"{kind}: pulled {report.records} of {count}, {report.quarantined} quarantined")
    return count / elapsed


def push_rate(kind: str, count: int, page: int) -> float:
    """Records/s of POSTing the same records to ``/ingest/{kind}`` in arrays of ``page``."""
    sandbox = SourceSandbox()
    records = load(sandbox, kind, count)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/push.db")
        token = new_token()
        store.save_client(ApiClient("bench", ("ingest:*",), datetime.now(UTC)), hash_token(token))
        settings = Settings(store_url=f"sqlite:///{tmp}/unused.db", mappings_dir=MAPPINGS,
                            sources=sources("http://unused", page), rate_limit=RateLimitSettings(enabled=False),
                            access_log=False)  # fmt: skip
        try:
            with serve(create_app(settings, store=store)) as url, httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as client:  # fmt: skip
                started = time.perf_counter()
                for at in range(0, count, page):
                    answer = client.post(f"/ingest/{kind}", json=records[at:at + page])
                    if answer.status_code != 200:
                        raise SystemExit(f"{kind}: /ingest answered {answer.status_code}: {answer.text[:300]}")
                elapsed = time.perf_counter() - started
        finally:
            store.close()
    return count / elapsed


def best(runs: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"pull vs push, {args.records} records per row, {args.page} per page/request, best of {args.runs}")
    print(f"{'source':<10} {'pull rec/s':>11} {'push rec/s':>11} {'ratio':>7}")
    for kind in ("odk", "commcare", "cht", "kobo"):
        pulled = best(args.runs, functools.partial(pull_rate, kind, args.records, args.page))
        pushed = best(args.runs, functools.partial(push_rate, kind, args.records, args.page))
        print(f"{kind:<10} {pulled:>11.0f} {pushed:>11.0f} {pulled / pushed:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
