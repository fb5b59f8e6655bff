"""Pulled sources in the configuration, the scheduler, and ``gateway sources pull``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from gateway.cli import app
from gateway.clock import ManualClock
from gateway.services import build_scheduler
from gateway.settings import Settings, SourceConfig
from gateway.store import open_store
from source_sandbox import SourceSandbox, odk_sample_rows
from tests.pull.conftest import MAPPINGS, ODK_FORM, ODK_PROJECT, PullHarness, pulled_sources

runner = CliRunner()


def _odk(**pull: Any) -> dict[str, Any]:
    return {"name": "odk", "kind": "odk-central", "mapping": "odk", "pull": pull}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"name": "odk", "kind": "odk-central", "mapping": "odk"}, "kind odk-central pulls records: it needs a pull:"),
        (_odk(base_url="https://central.example.org", form="f"), "source odk: kind odk-central needs pull.project"),
        (_odk(base_url="central.example.org", project=4, form="f"), "source odk: pull.base_url: Value error, must be"),
        (_odk(base_url="https://c.example.org", project=4, form="f", page_size=0), "source odk: pull.page_size"),
        (_odk(base_url="https://c.example.org", project=4, form="f", auth={"type": "basic", "username": "u"}),
         "set exactly one of secret_env and secret_file"),
        ({"name": "kobo", "kind": "kobo", "mapping": "kobo", "pull": {"base_url": "https://kf.example.org"}},
         "kind kobo is pushed to /ingest/kobo: pull: is for odk-central"),
        ({"name": "k", "kind": "kobo-api", "mapping": "kobo", "pull": {"base_url": "https://kf.example.org"}},
         "kind kobo-api needs pull.asset"),
    ],
)  # fmt: skip
def test_a_pulled_source_is_checked_when_the_settings_load(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(sources=[source])


def test_a_pulled_source_needs_nothing_more_than_its_pull_section() -> None:
    auth = {"type": "basic", "username": "u", "secret_env": "ODK_PASSWORD"}
    settings = Settings(sources=[_odk(base_url="https://central.example.org/", project=4, form=ODK_FORM, auth=auth)])
    assert settings.sources[0].pull is not None and settings.sources[0].kind == "odk-central"


async def test_the_scheduler_pulls_each_source_once_across_processes(pulls: PullHarness) -> None:
    pulls.sandbox.odk.submit(ODK_PROJECT, ODK_FORM, odk_sample_rows()[0])
    scheduler = build_scheduler(
        [], store=pulls.store, environ={}, clock=ManualClock(), connectors={}, claims=pulls.store, pulls=pulls.runner
    )
    tasks = {task.name: task for task in scheduler.tasks}
    assert sorted(tasks) == ["pull-cht", "pull-commcare", "pull-commcare-cases", "pull-kobo", "pull-odk"]
    assert all(task.cluster_once and task.interval == 300.0 for task in tasks.values())
    assert await scheduler.run_once("pull-odk")
    assert pulls.store.pull_cursor("odk") is not None
    assert pulls.store.quarantine_list(source="odk") == []
    # A second process sharing the store finds the slot claimed.
    assert pulls.store.claim_run("pull-odk", 7, "process-a")
    assert not pulls.store.claim_run("pull-odk", 7, "process-b")


def _config(tmp_path: Path, url: str, *, secret_env: str = "ODK_PASSWORD") -> Path:
    sources = [s.model_dump() for s in pulled_sources(url, secret=secret_env) if s.name == "odk"]
    sources.append(SourceConfig(name="cht-push", kind="cht", mapping="cht").model_dump())
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"store_url": f"sqlite:///{tmp_path}/gw.db", "mappings_dir": str(MAPPINGS),
                                    "sources": sources, "message_log": {"enabled": False}}))  # fmt: skip
    return path


def test_sources_pull_ingests_with_a_progress_bar_and_names_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: SourceSandbox, served: str
) -> None:
    monkeypatch.chdir(tmp_path)  # away from the checkout's ./gateway.yaml
    config = _config(tmp_path, served)
    sandbox.odk.submit(ODK_PROJECT, ODK_FORM, odk_sample_rows()[0])
    env = {"ODK_PASSWORD": "pull-secret", "WRONG": "nope"}
    result = runner.invoke(app, ["sources", "pull", "odk", "-c", str(config)], env=env)
    assert result.exit_code == 0, result.output
    assert "odk: pulled 1 record(s) in" in result.output and "1 stored" in result.output
    assert "0 quarantined" in result.output
    listed = runner.invoke(app, ["sources", "list", "-c", str(config)], env=env)
    assert "odk\todk-central\todk\tpulled, cursor" in listed.output and "cht-push\tcht\tcht\tpushed" in listed.output
    store = open_store(f"sqlite:///{tmp_path}/gw.db")
    try:
        assert store.pull_cursor("odk") is not None
    finally:
        store.close()
    again = runner.invoke(app, ["sources", "pull", "odk", "-c", str(config), "--restart"], env=env)
    assert "1 unchanged" in again.output
    pushed = runner.invoke(app, ["sources", "pull", "cht-push", "-c", str(config)], env=env)
    assert pushed.exit_code == 2 and "'cht-push' is not a pulled source (pulled sources: odk)" in pushed.output
    refused = runner.invoke(app, ["sources", "pull", "odk", "-c", str(_config(tmp_path, served, secret_env="WRONG"))],
                            env=env)  # fmt: skip
    assert refused.exit_code == 1 and "the credentials were refused; check pull.auth" in refused.output
    assert "nope" not in refused.output


async def test_a_delivery_worker_process_pulls_on_its_schedule(
    tmp_path: Path, sandbox: SourceSandbox, served: str
) -> None:
    import asyncio

    from gateway.services import run_worker
    from gateway.settings import delivery_sections

    sandbox.odk.submit(ODK_PROJECT, ODK_FORM, odk_sample_rows()[0])
    odk = [s for s in pulled_sources(served) if s.name == "odk"]
    settings = Settings(store_url=f"sqlite:///{tmp_path}/gw.db", queue_url=f"sqlite:///{tmp_path}/q.db",
                        mappings_dir=MAPPINGS, sources=odk)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(settings, delivery_sections(settings), environ={"ODK_PASSWORD": "pull-secret"}, stop=stop)
    )
    store = open_store(settings.store_url)
    try:
        for _ in range(400):  # the pull runs at start; give it up to 20 s on a busy machine
            if store.pull_cursor("odk") is not None or worker.done():
                break
            await asyncio.sleep(0.05)
        assert store.pull_cursor("odk") is not None
        assert store.quarantine_list(source="odk") == []
    finally:
        stop.set()
        await worker
        store.close()


def test_sources_pull_refuses_a_since_that_is_no_time_before_asking_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: SourceSandbox, served: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, served)
    sandbox.odk.submit(ODK_PROJECT, ODK_FORM, odk_sample_rows()[0])
    env = {"ODK_PASSWORD": "pull-secret"}
    for since in ("yesterday", "2026-13-01", " "):
        result = runner.invoke(app, ["sources", "pull", "odk", "-c", str(config), "--since", since], env=env)
        assert result.exit_code == 2, (since, result.output)
        assert result.stderr.startswith(f"gateway: --since {since!r}: "), result.stderr
    store = open_store(f"sqlite:///{tmp_path}/gw.db")
    try:
        assert store.pull_cursor("odk") is None  # nothing was read, nothing saved
    finally:
        store.close()
    since = "2020-01-01T00:00:00Z"
    dated = runner.invoke(app, ["sources", "pull", "odk", "-c", str(config), "--since", since], env=env)
    assert dated.exit_code == 0, dated.output
