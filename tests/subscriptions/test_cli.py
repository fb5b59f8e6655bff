"""``gateway subscriptions list|off`` on the store the settings name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.store import SubscriptionRecord, open_store

runner = CliRunner()


@pytest.fixture
def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATEWAY_STORE_URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    now = datetime.now(UTC)
    store = open_store(f"sqlite:///{tmp_path}/cli.db")
    content = {"resourceType": "Subscription", "criteria": "urn:chw-gateway:topic:new-patient",
               "channel": {"type": "rest-hook", "endpoint": "https://emr.test/hook",
                           "header": ["Authorization: Bearer partner-secret"]}}
    store.subscription_save(SubscriptionRecord("abc123", "emr", ("system/Patient.rs",), content, "active", 0,
                                               now, now))
    store.subscription_event_numbers([("abc123", 5), ("abc123", 7)], now)
    store.close()
    return tmp_path / "cli.db"


def test_list_shows_owner_topic_status_and_events_but_never_the_headers(store_file: Path) -> None:
    result = runner.invoke(app, ["subscriptions", "list", "--json"])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(text) for text in result.output.splitlines() if text.startswith("{")]
    assert (line["id"], line["owner"], line["status"], line["events"]) == ("abc123", "emr", "active", 2)
    assert line["topic"] == "urn:chw-gateway:topic:new-patient"
    assert "partner-secret" not in result.output
    assert "abc123" not in runner.invoke(app, ["subscriptions", "list", "--client", "other"]).output


def test_off_switches_it_off_and_an_unknown_id_fails(store_file: Path) -> None:
    assert runner.invoke(app, ["subscriptions", "off", "abc123"]).exit_code == 0
    store = open_store(f"sqlite:///{store_file}")
    try:
        record = store.subscription_get("abc123")
    finally:
        store.close()
    assert record is not None and record.status == "off"
    missing = runner.invoke(app, ["subscriptions", "off", "nope"])
    assert missing.exit_code == 1 and "nope" in missing.output
