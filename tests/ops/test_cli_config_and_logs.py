"""One configuration for every command, what a command says when it finds nothing, and the logs.

Configuration discovery: ``--config``, else ``--dev`` (``deploy/dev.yaml``), else
``GATEWAY_CONFIG``, else ``./gateway.yaml``, else the defaults. Logs: a UTC time on every
line of ``gateway serve`` and ``gateway worker``, JSON lines with ``log_format: json``,
httpx held at WARNING, warnings naming modules; tables not cut at 80 columns off a terminal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli.logs import configure_logging
from gateway.errors import module_of
from gateway.settings import ConfigFileError, Settings, find_config_file
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
runner = CliRunner()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no GATEWAY_* variables."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(path: Path, store: str, **extra: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"store_url: sqlite:///{store}", f"queue_url: sqlite:///{store}-queue"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- discovery


def test_discovery_order_is_config_then_dev_then_environment_then_local_file(here: Path) -> None:
    assert find_config_file(None, environ={}, cwd=here) is None
    write_config(here / "gateway.yaml", "local.db")
    assert find_config_file(None, environ={}, cwd=here) == Path("gateway.yaml")
    assert find_config_file(None, environ={"GATEWAY_CONFIG": "/etc/gw.yaml"}, cwd=here) == Path("/etc/gw.yaml")
    with pytest.raises(ConfigFileError, match="--dev: deploy/dev.yaml not found"):
        find_config_file(None, dev=True, environ={"GATEWAY_CONFIG": "/etc/gw.yaml"}, cwd=here)
    write_config(here / "deploy/dev.yaml", "dev.db")
    assert find_config_file(None, dev=True, environ={"GATEWAY_CONFIG": "/etc/gw.yaml"}, cwd=here) == Path(
        "deploy/dev.yaml"
    )
    assert find_config_file(Path("mine.yaml"), dev=True, environ={"GATEWAY_CONFIG": "x"}, cwd=here) == Path(
        "mine.yaml"
    )


def created_in(output: str) -> str:
    """The store a ``clients create`` said it wrote to."""
    found = re.search(r"in store (\S+)", output)
    assert found, output
    return found.group(1)


def test_every_command_reads_the_same_file(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(here / "gateway.yaml", "local.db")
    write_config(here / "deploy/dev.yaml", "dev.db")
    write_config(here / "other.yaml", "other.db")

    made = runner.invoke(app, ["clients", "create", "emr", "--scope", "admin"])
    assert made.exit_code == 0, made.output
    assert created_in(made.stdout) == "sqlite:///local.db"
    listed = runner.invoke(app, ["clients", "list"])
    assert listed.stdout.startswith("emr\tadmin\t")
    assert runner.invoke(app, ["clients", "list", "--dev"]).stdout == ""  # the dev store has no clients

    made = runner.invoke(app, ["clients", "create", "lab", "--scope", "admin", "--dev"])
    assert created_in(made.stdout) == "sqlite:///dev.db"
    assert runner.invoke(app, ["clients", "list", "--dev"]).stdout.startswith("lab\t")
    assert runner.invoke(app, ["config", "check", "--dev"]).stdout.count('"sqlite:///dev.db"') == 1

    monkeypatch.setenv("GATEWAY_CONFIG", "other.yaml")
    made = runner.invoke(app, ["clients", "create", "etl", "--scope", "admin"])
    assert created_in(made.stdout) == "sqlite:///other.db"
    made = runner.invoke(app, ["clients", "create", "etl", "--scope", "admin", "--config", "gateway.yaml"])
    assert created_in(made.stdout) == "sqlite:///local.db"
    assert not (here / "gateway.db").exists()


def test_a_command_that_finds_nothing_says_where_it_looked(here: Path) -> None:
    empty = runner.invoke(app, ["clients", "list"])
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "no API clients" in empty.stderr and "store sqlite:///gateway.db" in empty.stderr
    assert "no --config, GATEWAY_CONFIG or ./gateway.yaml" in empty.stderr

    write_config(here / "gateway.yaml", "local.db")
    for args, said in ((["quarantine", "list"], "nothing in the quarantine"),
                       (["queue", "dead-letters"], "no dead letters"),
                       (["queue", "status"], "no destinations configured")):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert said in result.stderr and "configuration gateway.yaml; store sqlite:///local.db" in result.stderr
        if args == ["queue", "dead-letters"]:
            assert result.stdout.strip() == "", (args, result.stdout)  # no empty table

    ping = runner.invoke(app, ["dhis2", "ping", "dhis2-sandbox"])
    assert ping.exit_code == 2
    assert "no DHIS2 destination named 'dhis2-sandbox' in the configuration (gateway.yaml;" in ping.output
    assert "it has no DHIS2 destination" in ping.output


def test_dev_without_the_dev_file_is_a_configuration_error(here: Path) -> None:
    result = runner.invoke(app, ["queue", "status", "--dev"])
    assert result.exit_code == 2 and "deploy/dev.yaml not found" in result.stderr


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"gateway {version('chw-fhir-gateway')}\n"


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(here: Path) -> None:
    long_name = "national-shared-health-record-" + "x" * 34  # the longest name allowed
    config = write_config(here / "gateway.yaml", "local.db")
    config.write_text(config.read_text() + f"destinations:\n  - {{name: {long_name}, kind: webhook, "
                      "base_url: 'https://example.org/hook'}\n")
    result = runner.invoke(app, ["queue", "status"])
    assert result.exit_code == 0, result.output
    assert any(long_name in line and "closed" in line for line in result.stdout.splitlines()), result.stdout


# -- log lines


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Where configure_logging writes; the logging set-up of the test run is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, warnings.showwarning,
             {name: (logging.getLogger(name).level, logging.getLogger(name).handlers[:],
                     logging.getLogger(name).propagate)
              for name in ("httpx", "httpcore", "gateway.access", "uvicorn.access")})
    stream = io.StringIO()
    yield stream
    root.handlers[:], level, warnings.showwarning, loggers = saved
    root.setLevel(level)
    for name, (lvl, handlers, propagate) in loggers.items():
        logger = logging.getLogger(name)
        logger.setLevel(lvl)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def test_text_lines_carry_a_utc_time_and_the_logger_name(logs: io.StringIO) -> None:
    configure_logging(Settings(), logs)
    logging.getLogger("gateway.delivery.worker").warning("destination %s unreachable", "shr")
    logging.getLogger("httpx").info("HTTP Request: GET https://dhis2.example.org/api/me")
    assert re.fullmatch(rf"{TIME} WARNING gateway.delivery.worker: destination shr unreachable\n", logs.getvalue())


def test_json_lines_and_the_access_log_share_the_stream(logs: io.StringIO) -> None:
    configure_logging(Settings(log_format="json"), logs)
    try:
        raise KeyError("patient-secret")
    except KeyError:
        logging.getLogger("gateway.api").exception("request failed")
    logging.getLogger("gateway.access").info('{"status":200}')
    first, second = logs.getvalue().splitlines()
    entry = json.loads(first)
    assert re.fullmatch(TIME, entry.pop("time"))
    assert entry == {"level": "ERROR", "logger": "gateway.api", "message": "request failed", "error": "KeyError"}
    assert "patient-secret" not in logs.getvalue()  # no traceback text in JSON lines
    assert json.loads(second) == {"status": 200}


def test_text_lines_keep_an_exceptions_stack_but_never_its_message(logs: io.StringIO) -> None:
    """uvicorn logs every unhandled request error with the exception attached ("Exception in ASGI
    application"); its message can quote the request's record, so the text format shows where it was
    raised (and what caused it) by type, as the JSON format names the type, never the message."""
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.error").disabled = False
    configure_logging(Settings(), logs)
    record = {"name": "Achieng Grace", "birthDate": "2021-03-04", "id": "KBL-P-00000042"}
    try:
        try:
            int(record["name"])
        except ValueError as exc:
            raise RuntimeError(f"record {record['id']} born {record['birthDate']} failed") from exc
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    text = logs.getvalue()
    assert "Exception in ASGI application" in text
    assert "Traceback (most recent call last)" in text and "test_cli_config_and_logs.py" in text  # the stack
    assert "ValueError" in text and "RuntimeError" in text  # each exception of the chain, by type
    assert "Achieng" not in text and "KBL-P" not in text and "2021-03-04" not in text


def test_uvicorn_access_lines_are_not_written(logs: io.StringIO) -> None:
    """uvicorn's access line holds the path and query as sent; only the gateway's own line may be written
    (under --workers uvicorn configures its loggers before the app does, so access_log=False is not enough)."""
    logging.getLogger("uvicorn.access").propagate = True  # as uvicorn leaves it with access_log=True
    # Another test's in-process server may have left uvicorn.error at its log level (as uvicorn's
    # Config sets it): this test is about the access lines, so start from a fresh logger.
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.error").disabled = False
    configure_logging(Settings(), logs)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                                             "/fhir/Patient?name=Wilfrid", "1.1", 200)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert "Wilfrid" not in logs.getvalue()
    assert "Application startup complete." in logs.getvalue()


def test_warnings_name_the_module_not_the_file(logs: io.StringIO) -> None:
    configure_logging(Settings(), logs)
    warnings.showwarning("lease lost", RuntimeWarning, sys.modules["gateway.settings"].__file__ or "", 12)
    line = logs.getvalue()
    assert re.fullmatch(rf"{TIME} WARNING py.warnings: RuntimeWarning: lease lost \(gateway.settings:12\)\n", line)
    assert module_of("/nowhere/thing.py") == "thing.py"


# -- the processes


def process_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(ROOT), GATEWAY_STORE_URL=f"sqlite:///{tmp_path}/store.db",
               GATEWAY_QUEUE_URL=f"sqlite:///{tmp_path}/queue.db", **settings)
    return env


def test_gateway_serve_writes_json_lines_only(tmp_path: Path) -> None:
    port = free_port()
    env = process_env(tmp_path, GATEWAY_LOG_FORMAT="json", GATEWAY_PORT=str(port))
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "gateway serve did not start"
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/Patient").status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    requests = [line for line in lines if "request_id" in line]
    assert [(r["route"], r["status"]) for r in requests] == [("/healthz", 200), ("/fhir/{rtype}", 401)]
    assert all({"client", "duration_ms"} <= set(r) for r in requests)
    others = [line for line in lines if "request_id" not in line]
    assert others and all(re.fullmatch(TIME, line["time"]) and line["logger"] for line in others)
    assert any(line["logger"].startswith("uvicorn") for line in others)


def test_gateway_worker_lines_carry_times(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    (tmp_path / "gateway.yaml").write_text(
        "destinations:\n  - {name: hook, kind: webhook, base_url: 'http://127.0.0.1:9/hook'}\n", encoding="utf-8"
    )
    worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    lines = stderr.splitlines()
    assert any("delivery worker" in line and "started" in line for line in lines), stderr
    assert any(f"gateway worker: configuration gateway.yaml; store sqlite:///{tmp_path}/store.db" in line
               for line in lines), stderr
    assert all(re.match(rf"{TIME} (INFO|WARNING|ERROR) [\w.]+: ", line) for line in lines), stderr


def test_a_worker_no_longer_heard_from_holds_no_jobs_in_the_listing(here: Path) -> None:
    """A killed worker's last heartbeat said 8 jobs in flight; its leases lapse, so the listing
    does not show them as held."""
    import asyncio
    import time

    from gateway.clock import SystemClock
    from gateway.delivery.queue import WorkerBeat
    from gateway.delivery.queue_factory import open_queue

    write_config(here / "gateway.yaml", "local.db")
    queue = open_queue(f"sqlite:///{here}/local.db-queue", clock=SystemClock())
    long_ago = time.time() - 3600
    asyncio.run(queue.heartbeat(WorkerBeat("vm-killed", ("rx",), long_ago, long_ago, 8)))
    asyncio.run(queue.heartbeat(WorkerBeat("vm-live", ("rx",), time.time(), time.time(), 3)))
    asyncio.run(queue.close())
    result = runner.invoke(app, ["queue", "workers"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if "vm-" in line}
    killed = rows["vm-killed"]
    assert " - " in killed and " 8 " not in killed and killed.rstrip(" │").endswith("no")
    assert " 3 " in rows["vm-live"]
