"""``gateway serve --dev``: the local trial ``make run`` starts.

It starts the DHIS2 sandbox the dev configuration delivers to, sends the demo records of
``deploy/demo/`` (one JSON array per configured source: ``cht.json`` goes to source ``cht``)
through the ingest service, and prints an admin token and a walkthrough whose commands
work as printed. The demo records are sent on every dev start: re-sent records change
nothing, so a second start reports them unchanged and delivers nothing twice.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from gateway.cli.common import check_port_free, fail

if TYPE_CHECKING:
    from gateway.ingest import IngestReport
    from gateway.settings import Settings

__all__ = ["DEMO_DIR", "load_demo_records", "print_walkthrough", "sandbox_url", "start_sandbox"]

DEMO_DIR = Path("deploy/demo")
SANDBOX_STATE = Path("var/dhis2-sandbox")


def sandbox_url(settings: Settings) -> str | None:
    """The base URL of the first DHIS2 destination on this machine: where ``--dev`` runs the sandbox."""
    for destination in settings.destinations:
        if destination.kind == "dhis2" and urlsplit(destination.base_url).hostname in ("127.0.0.1", "localhost"):
            return destination.base_url.rstrip("/")
    return None


def start_sandbox(base_url: str) -> Any:
    """Start the DHIS2 sandbox as a child process on ``base_url``'s port and wait until it listens."""
    import socket
    import subprocess
    import time

    port = urlsplit(base_url).port or 80
    # Before the child: once it fails to bind, whatever listens there would pass the check below.
    check_port_free("127.0.0.1", port, what="the DHIS2 sandbox",
                    advice="point the dhis2 destination's base_url at another port")
    SANDBOX_STATE.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "gateway", "sandbox", "dhis2", "--port", str(port),
                              "--state", str(SANDBOX_STATE)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            fail(f"the DHIS2 sandbox did not start (is port {port} taken?)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return child
        except OSError:
            time.sleep(0.2)
    child.terminate()
    fail("the DHIS2 sandbox did not start within 30 s")


def load_demo_records(settings: Settings) -> list[IngestReport]:
    """Send ``deploy/demo/<source>.json`` to each configured source that has one; the reports, in order."""
    from gateway.errors import GatewayError
    from gateway.ingest import split_body
    from gateway.services import ServicePlan, Services

    files = [(source.name, DEMO_DIR / f"{source.name}.json") for source in settings.sources]
    files = [(name, path) for name, path in files if path.is_file()]
    if not files:
        return []
    reports = []
    with Services.build(settings, ServicePlan(ingest=True, audit=False)) as services:
        ingest = services.require_ingest()
        for name, path in files:
            try:
                records = split_body(path.read_bytes(), "application/json", max_depth=settings.max_json_depth)
                reports.append(ingest.ingest(name, records))
            except GatewayError as exc:
                fail(f"{path}: {exc}", 1)
    return reports


def _gateway_command() -> str:
    """How to run ``gateway`` from here: the script beside this Python (``.venv/bin/gateway`` in the checkout)."""
    script = Path(sys.executable).parent / "gateway"
    if not script.exists():
        return "gateway"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def print_walkthrough(settings: Settings, token: str, reports: list[IngestReport], sandbox: str | None) -> None:
    """The admin token and the commands that show each step of the job, as they work here."""
    base = f"http://{settings.host}:{settings.port}"
    gateway = _gateway_command()
    auth = f'-H "Authorization: Bearer {token}"'
    echo = typer.echo
    echo(f"\nConfiguration {settings.config_file or '(defaults)'}; store {settings.store_url}")
    if sandbox is not None:
        echo(f"DHIS2 sandbox on {sandbox} (web API user admin/district)")
    echo("\nAdmin token for this run (scopes system/*.cruds admin ingest:*):\n")
    echo(f"  {token}\n")
    if reports:
        sent = ", ".join(
            f"{report.source}: {len(report.results)} ({_counts(report)})" for report in reports
        )
        echo(f"Demo records from {DEMO_DIR}/ sent through the ingest service: {sent}.")
        new = any(result.status != "unchanged" for report in reports for result in report.results)
        if sandbox is not None and new:
            echo("Within a minute the worker delivers them to the DHIS2 sandbox and writes the DHIS2 UIDs back.")
        elif sandbox is not None:
            echo("All of them were stored before, so nothing new goes to the DHIS2 sandbox.")
    echo("\nEach step:\n")
    echo("  # 1. the records, mapped to FHIR and stored")
    echo(f'  curl {auth} "{base}/fhir/Patient?_elements=name,identifier"')
    first = reports[0] if reports else None
    if first is not None:
        echo("  # send the records again: every one comes back unchanged")
        echo(f'  curl {auth} -H "Content-Type: application/json" \\')
        echo(f"       --data @{DEMO_DIR}/{first.source}.json {base}/ingest/{first.source}")
    echo("  # 2. the delivery queue: depth 0 and nothing dead once delivered")
    echo(f"  {gateway} queue status")
    if sandbox is not None:
        echo("  # 3. what DHIS2 received: tracked entities and events")
        pat = _sandbox_token(settings)
        echo(f'  curl -H "Authorization: ApiToken {pat}" {sandbox}/api/tracker/trackedEntities')
        echo(f'  curl -H "Authorization: ApiToken {pat}" {sandbox}/api/tracker/events')
        echo("  # 4. each Patient carries its tracked entity's UID (identifier system …/api/tracker/trackedEntities)")
        echo(f'  curl {auth} "{base}/fhir/Patient?_elements=identifier"')
    echo("  # records that could not be mapped, and API clients")
    echo(f"  {gateway} quarantine list")
    echo(f"  {gateway} clients list")
    if settings.console.enabled:
        echo(f"  # the operator console, in a browser: {base}/console (log in with the admin token above)")
    echo("")


def _counts(report: IngestReport) -> str:
    counts = report.to_json()
    return ", ".join(f"{counts[key]} {key}" for key in ("stored", "unchanged", "stale", "quarantined") if counts[key])


def _sandbox_token(settings: Settings) -> str:
    """The sandbox's public demo token, as the dev configuration's ``secret_file`` holds it."""
    for destination in settings.destinations:
        secret_file = destination.auth.secret_file if destination.auth is not None else None
        if destination.kind == "dhis2" and secret_file is not None and Path(secret_file).is_file():
            return Path(secret_file).read_text(encoding="utf-8").strip()
    return "$DHIS2_TOKEN"
