"""``POST /admin/reload``: a source added to the configuration file is served without a restart; an
invalid file, source or mapping is refused with every problem at file:line and changes nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.services import ServicePlan
from gateway.settings import load_settings
from gateway.store import Store
from source_sandbox import SourceSandbox, odk_sample_rows
from tests.ingest.conftest import Harness, sample
from tests.pull.conftest import ENVIRON, ODK_FORM, ODK_PROJECT
from tests.support.gateway_app import MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer

JSON = {"Content-Type": "application/json"}


def write_config(path: Path, store: Store, root: Path, sources: list[dict[str, Any]], **more: Any) -> None:
    """The configuration file (the store URL is unused: the app is handed the store)."""
    values = {"store_url": f"sqlite:///{path.parent}/unused.db", "queue_url": f"sqlite:///{path.parent}/q.db",
              "port": 8080, "mappings_dir": str(root), "rate_limit": MACHINE_SPEED_LIMITS, "sources": sources, **more}
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def line_of(path: Path, text: str) -> int:
    """The 1-based line of the first line of ``path`` holding ``text``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


CHT = {"name": "cht", "kind": "cht", "mapping": "cht"}
ODK = {"name": "odk", "kind": "odk", "mapping": "odk"}


class ReloadHarness(Harness):
    """The ingest clients, and the configuration file the app was built from."""

    def __init__(self, app: FastAPI, store: Store, root: Path, config: Path) -> None:
        super().__init__(app, store, root)
        self.config = config


@pytest.fixture
async def reloadable(ingest_store: Store, mappings_copy: Path, tmp_path: Path) -> AsyncIterator[ReloadHarness]:
    """An app built from a configuration file with one source, cht (lifespan entered)."""
    config = tmp_path / "gateway.yaml"
    write_config(config, ingest_store, mappings_copy, [CHT])
    app = create_app(load_settings(config), store=ingest_store)
    async with app.router.lifespan_context(app):
        harness = ReloadHarness(app, ingest_store, mappings_copy, config)
        yield harness
        await harness.aclose()


async def test_a_source_added_to_the_file_ingests_after_a_reload(reloadable: ReloadHarness) -> None:
    gw = reloadable
    assert (await gw.sender.post("/ingest/odk", content=sample("odk", "household-visit-expanded"),
                                 headers=JSON)).status_code == 404  # fmt: skip
    write_config(gw.config, gw.store, gw.root, [CHT, ODK])

    reload = await gw.admin.post("/admin/reload")

    assert reload.status_code == 200, reload.text
    body = reload.json()
    assert body["reloaded"] is True and body["sources"] == ["cht", "odk"]
    assert {"cht", "odk"} <= set(body["sets"]) and body["restart_required"] == []
    stored = await gw.sender.post("/ingest/odk", content=sample("odk", "household-visit-expanded"), headers=JSON)
    assert stored.status_code == 200, stored.text
    assert {r["status"] for r in stored.json()["results"]} == {"stored"}
    # The sources that were there keep working, and a removed source is gone.
    write_config(gw.config, gw.store, gw.root, [ODK])
    assert (await gw.admin.post("/admin/reload")).status_code == 200
    gone = await gw.sender.post("/ingest/cht", content=sample("cht", "person-patient"), headers=JSON)
    assert gone.status_code == 404


async def test_an_invalid_configuration_is_refused_with_file_and_line_and_the_old_one_serves(
    reloadable: ReloadHarness,
) -> None:
    gw = reloadable
    config = gw.config
    # Two problems at once: a source naming a set that does not exist, and a mapping that fails
    # the static checks (a converter that does not exist): both are listed, nothing changes.
    write_config(config, gw.store, gw.root, [CHT, ODK, {"name": "kobo", "kind": "kobo", "mapping": "kobbo"}])
    person = gw.root / "cht" / "person.yaml"
    person.write_text(person.read_text().replace("| human_name", "| humane_name"))

    reload = await gw.admin.post("/admin/reload")

    assert reload.status_code == 422, reload.text
    outcome = reload.json()
    assert outcome["resourceType"] == "OperationOutcome"
    problems = [issue["diagnostics"] for issue in outcome["issue"] if issue["severity"] == "error"]
    assert any(p.startswith(f"{config}:{line_of(config, 'mapping: kobbo')}: sources[2].mapping:") and "'kobbo'" in p
               for p in problems), problems  # fmt: skip
    assert any(re.match(rf"{re.escape(str(person))}:\d+: .*humane_name", p) for p in problems), problems
    # The previous configuration keeps serving: cht with its old mapping, and no odk.
    still = await gw.sender.post("/ingest/cht", content=sample("cht", "person-patient"), headers=JSON)
    assert still.status_code == 200 and still.json()["results"][0]["status"] == "stored", still.text
    assert (await gw.sender.post("/ingest/odk", content=b"{}", headers=JSON)).status_code == 404


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources:\n  - name: odk\n    kind: odk\n     mapping: odk\n", r":4: invalid YAML"),
        ("sources:\n  - name: odk\n    kind: odk\n", r":2: sources\[0\]\.mapping: Field required"),
        ("sources:\n  - name: odk\n    kind: nope\n    mapping: odk\n", r":3: sources\[0\]\.kind: String should match"),
        ("port: 8080\nsources: [{name: odk, kind: odk, mapping: odk, quarantine_status: 500}]\n",
         r":2: sources\[0\]\.quarantine_status: must be 202 or 422"),
    ],
    ids=["yaml", "missing-field", "bad-kind", "bad-status"],
)
async def test_a_broken_file_is_refused_naming_its_line(reloadable: ReloadHarness, text: str, expected: str) -> None:
    config = reloadable.config
    config.write_text(text)
    reload = await reloadable.admin.post("/admin/reload")
    assert reload.status_code == 422, reload.text
    (problem,) = [i["diagnostics"] for i in reload.json()["issue"] if i["severity"] == "error"]
    assert re.match(re.escape(str(config)) + expected, problem), problem
    still = await reloadable.sender.post("/ingest/cht", content=sample("cht", "person-patient"), headers=JSON)
    assert still.status_code == 200


async def test_a_bad_setting_and_a_broken_mapping_are_listed_together(reloadable: ReloadHarness) -> None:
    gw = reloadable
    config = gw.config
    write_config(config, gw.store, gw.root, [CHT, {"name": "odk", "kind": "odk"}])
    person = gw.root / "cht" / "person.yaml"
    person.write_text(person.read_text().replace("| human_name", "| humane_name"))
    reload = await gw.admin.post("/admin/reload")
    assert reload.status_code == 422
    problems = [i["diagnostics"] for i in reload.json()["issue"] if i["severity"] == "error"]
    assert problems[0] == f"{config}:{line_of(config, 'name: odk')}: sources[1].mapping: Field required"
    assert any(p.startswith(f"{person}:") and "humane_name" in p for p in problems[1:]), problems


async def test_a_bad_setting_and_a_source_naming_no_set_are_listed_together(reloadable: ReloadHarness) -> None:
    """One round of fixes: a source whose own value is wrong (quarantine_status) does not hide
    another that names a mapping set that does not exist; each is named at its line."""
    gw = reloadable
    config = gw.config
    bad_status = {"name": "odk", "kind": "odk", "mapping": "odk", "quarantine_status": 500}
    write_config(config, gw.store, gw.root, [CHT, bad_status, {"name": "kobo", "kind": "kobo", "mapping": "kobbo"}])
    reload = await gw.admin.post("/admin/reload")
    assert reload.status_code == 422
    problems = [i["diagnostics"] for i in reload.json()["issue"] if i["severity"] == "error"]
    assert problems[0].startswith(f"{config}:{line_of(config, 'quarantine_status')}: sources[1].quarantine_status")
    assert any(p.startswith(f"{config}:{line_of(config, 'mapping: kobbo')}: sources[2].mapping:") and "'kobbo'" in p
               for p in problems), problems  # fmt: skip
    assert len(problems) == 2, problems


async def test_a_changed_setting_that_needs_a_restart_is_named_not_ignored(reloadable: ReloadHarness) -> None:
    gw = reloadable
    write_config(gw.config, gw.store, gw.root, [CHT, ODK], port=9090, max_body_bytes=4096)
    reload = await gw.admin.post("/admin/reload")
    assert reload.status_code == 200, reload.text
    assert reload.json()["restart_required"] == ["max_body_bytes", "port"]
    assert reload.json()["sources"] == ["cht", "odk"]  # the reloadable part applied all the same
    # Still named on the next reload: the process runs with the old values until restarted.
    assert (await gw.admin.post("/admin/reload")).json()["restart_required"] == ["max_body_bytes", "port"]


async def test_reload_needs_the_admin_scope(reloadable: ReloadHarness) -> None:
    assert (await reloadable.sender.post("/admin/reload")).status_code == 403
    assert (await reloadable.fhir.post("/admin/reload")).status_code == 403
    assert (await reloadable.client().post("/admin/reload")).status_code == 401


async def test_a_pulled_source_added_by_a_reload_is_scheduled_and_pulled(
    ingest_store: Store, mappings_copy: Path, tmp_path: Path
) -> None:
    sandbox = SourceSandbox()
    sandbox.odk.submit(ODK_PROJECT, ODK_FORM, odk_sample_rows()[0])
    config = tmp_path / "gateway.yaml"
    write_config(config, ingest_store, mappings_copy, [CHT])
    app = create_app(load_settings(config), store=ingest_store, plan=ServicePlan(environ=ENVIRON, scheduler=True))
    with LiveServer(sandbox.app()) as odk_central:
        async with app.router.lifespan_context(app):
            gw = Harness(app, ingest_store, mappings_copy)
            pulled = {"name": "odk-pull", "kind": "odk-central", "mapping": "odk", "pull": {
                "base_url": odk_central.url, "project": ODK_PROJECT, "form": ODK_FORM, "interval": "1h",
                "auth": {"type": "basic", "username": "gateway@example.org", "secret_env": "ODK_PASSWORD"}}}
            write_config(config, ingest_store, mappings_copy, [CHT, pulled])
            reload = await gw.admin.post("/admin/reload")
            assert reload.status_code == 200, reload.text
            assert reload.json()["pull_schedule_changes"] == ["pull-odk-pull every 3600s"]
            # A new scheduled task runs at start: the sample lands without anyone asking.
            for _ in range(100):
                if ingest_store.pull_cursor("odk-pull") is not None:
                    break
                await asyncio.sleep(0.1)
            assert ingest_store.pull_cursor("odk-pull") is not None
            assert ingest_store.quarantine_list(source="odk-pull") == []
            # Removing it stops its schedule.
            write_config(config, ingest_store, mappings_copy, [CHT])
            again = await gw.admin.post("/admin/reload")
            assert again.json()["pull_schedule_changes"] == ["pull-odk-pull stopped"]
            await gw.aclose()
