"""``make run`` end to end: the dev server, its printed walkthrough and the README's commands.

The server starts as ``make run`` starts it (``gateway serve --dev``) in a directory laid out
like the checkout (the dev configuration, ``./gateway.yaml`` linking to it, the demo records,
the mappings, ``.venv``), so nothing is written into the repository. Only the two ports are
changed (free ones instead of 8080 and 8081). Then the walkthrough it prints and the README's
shell blocks are run as written, and the demo records must reach the DHIS2 sandbox with their
UIDs written back, with nothing dead and nothing quarantined.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEMO_PEOPLE = 4  # two CHT children, two CommCare TB patients (deploy/demo/)
TRACKED_ENTITIES = "/api/tracker/trackedEntities"


@dataclass
class DevServer:
    directory: Path
    port: int
    sandbox_port: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    env: dict[str, str]

    def localise(self, text: str) -> str:
        """The README's text with this run's ports instead of 8080 and 8081."""
        return text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}").replace(
            "127.0.0.1:8081", f"127.0.0.1:{self.sandbox_port}"
        )

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run shell lines in the server's directory, stopping at the first failing one."""
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.directory, env=self.env,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    directory = tmp_path_factory.mktemp("checkout")
    port, sandbox_port = free_port(), free_port()
    (directory / "deploy").mkdir()
    dev = (ROOT / "deploy/dev.yaml").read_text(encoding="utf-8")
    assert "http://127.0.0.1:8081" in dev
    (directory / "deploy/dev.yaml").write_text(dev.replace("127.0.0.1:8081", f"127.0.0.1:{sandbox_port}"))
    (directory / "deploy/dhis2-sandbox.pat").write_bytes((ROOT / "deploy/dhis2-sandbox.pat").read_bytes())
    (directory / "deploy/demo").symlink_to(ROOT / "deploy/demo")
    (directory / "mappings").symlink_to(ROOT / "mappings")
    (directory / "gateway.yaml").symlink_to(os.readlink(ROOT / "gateway.yaml"))
    (directory / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    stdout, stderr = directory / "serve.out", directory / "serve.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen([".venv/bin/gateway", "serve", "--dev", "--port", str(port)],
                                   cwd=directory, env=env, stdout=out, stderr=err)
    server = DevServer(directory, port, sandbox_port, process, stdout, stderr, env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, stderr.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway serve --dev did not get ready in 60 s"
            time.sleep(0.3)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def sandbox_get(server: DevServer, path: str) -> dict[str, object]:
    token = (server.directory / "deploy/dhis2-sandbox.pat").read_text().strip()
    response = httpx.get(f"http://127.0.0.1:{server.sandbox_port}{path}",
                         headers={"Authorization": f"ApiToken {token}"})
    response.raise_for_status()
    return dict(response.json())


def wait_delivered(server: DevServer) -> dict[str, int]:
    """The sandbox's counts once every demo person, enrollment and visit arrived (a minute at most)."""
    deadline = time.monotonic() + 60
    while True:
        stored: dict[str, int] = dict(sandbox_get(server, "/sandbox/stats")["stored"])  # type: ignore[call-overload]
        if all(stored.get(kind, 0) >= DEMO_PEOPLE for kind in ("tracked_entity", "enrollment", "event")):
            return stored
        assert time.monotonic() < deadline, f"demo records not delivered within a minute: {stored}"
        time.sleep(0.5)


def readme_blocks(section: str) -> list[str]:
    """The ``sh`` code blocks of one ``##`` section of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end if end > 0 else None], re.S)


def walkthrough(server: DevServer) -> list[str]:
    """The commands the server printed under "Each step", continuation lines joined."""
    deadline = time.monotonic() + 30
    while "clients list" not in server.stdout.read_text():
        assert time.monotonic() < deadline, server.stdout.read_text()
        time.sleep(0.2)
    lines = server.stdout.read_text().split("Each step:", 1)[1].splitlines()
    commands: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + line
        else:
            commands.append(line)
    return commands


def test_the_demo_records_reach_dhis2_with_their_uids_written_back(dev_server: DevServer) -> None:
    stored = wait_delivered(dev_server)
    assert stored["tracked_entity"] == stored["enrollment"] == stored["event"] == DEMO_PEOPLE
    people = sandbox_get(dev_server, TRACKED_ENTITIES)["trackedEntities"]
    sandbox_uids = {person["trackedEntity"] for person in people}  # type: ignore[attr-defined]
    assert len(sandbox_uids) == DEMO_PEOPLE
    deadline = time.monotonic() + 30
    while True:  # nothing left waiting (for a location or a patient), nothing retrying, nothing dead
        status = dev_server.sh(".venv/bin/gateway queue status --json")
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)
        assert row["name"] == "dhis2-sandbox" and row["dead"] == 0 and row["retrying"] == 0, row
        if row["depth"] == 0:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.5)

    system = f"http://127.0.0.1:{dev_server.sandbox_port}{TRACKED_ENTITIES}"
    deadline = time.monotonic() + 30
    while True:  # the write-back is a new Patient version, committed just after the delivery
        check = dev_server.sh(".venv/bin/gateway quarantine list --json")
        assert check.returncode == 0 and check.stdout == "", check.stdout + check.stderr
        token = dev_server.sh(".venv/bin/gateway clients create uid-check --scope 'system/Patient.rs' | tail -n 1")
        bundle = httpx.get(f"http://127.0.0.1:{dev_server.port}/fhir/Patient",
                           headers={"Authorization": f"Bearer {token.stdout.strip()}"}).json()
        written = {i["value"] for e in bundle.get("entry", []) for i in e["resource"].get("identifier", [])
                   if i.get("system") == system}
        if written == sandbox_uids:
            break
        assert time.monotonic() < deadline, (written, sandbox_uids)
        time.sleep(0.5)


def test_the_printed_walkthrough_works_as_printed(dev_server: DevServer) -> None:
    commands = walkthrough(dev_server)
    assert not any("<" in command for command in commands), commands  # no placeholders left to fill in
    wait_delivered(dev_server)
    for command in commands:
        result = dev_server.sh(command)
        assert result.returncode == 0, (command, result.stderr)
        if command.startswith("curl"):
            answer = json.loads(result.stdout)
            assert answer.get("resourceType") != "OperationOutcome" and "httpStatusCode" not in answer, answer
    assert any("queue status" in c for c in commands) and any(TRACKED_ENTITIES in c for c in commands)


def test_the_readme_quickstart_runs_against_make_run(dev_server: DevServer) -> None:
    wait_delivered(dev_server)
    (walk,) = [block for block in readme_blocks("Quickstart") if ".venv/bin/gateway" in block]
    result = dev_server.sh(dev_server.localise(walk))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"dhis2-sandbox\s*│\s*dhis2\s*│\s*0\s*│", out), out  # depth 0
    assert "0 record(s)" in out and "up (GET /api/system/ping), credentials accepted, supported" in out
    assert '"unchanged":7' in out.replace(" ", "")
    assert out.count('"trackedEntity"') >= DEMO_PEOPLE


def test_a_token_made_as_the_readme_says_is_accepted_by_the_running_server(dev_server: DevServer) -> None:
    blocks = [dev_server.localise(b) for b in readme_blocks("Access control") if ".venv/bin/gateway" in b]
    create = blocks[0].strip()
    assert create.startswith(".venv/bin/gateway clients create openmrs"), create
    made = dev_server.sh(create)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    response = httpx.get(f"http://127.0.0.1:{dev_server.port}/fhir/Patient",
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json()["total"] >= DEMO_PEOPLE

    life_cycle = dev_server.sh(blocks[1])
    assert life_cycle.returncode == 0, life_cycle.stderr
    assert re.search(r"^openmrs\tsystem/Patient.rs system/Observation.rs\t", life_cycle.stdout, re.M)
    assert re.search(r"^lab\t.*\tactive\t", life_cycle.stdout, re.M)
    assert "revoked client lab" in life_cycle.stdout
    assert not (dev_server.directory / "gateway.db").exists()  # no stray store beside the dev one
