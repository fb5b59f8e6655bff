"""The walkthrough ``make run`` prints says what the demo records did: delivered when new, nothing
new when every one of them was stored by an earlier start."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.dev import print_walkthrough
from gateway.ingest.results import IngestReport, RecordResult
from gateway.settings import Settings


@pytest.mark.parametrize(("statuses", "said"), [
    (["unchanged", "stored"], "Within a minute the worker delivers them"),
    (["unchanged", "unchanged"], "All of them were stored before, so nothing new goes to the DHIS2 sandbox."),
])
def test_the_delivery_line_follows_what_the_records_did(
    statuses: list[str], said: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = IngestReport("cht", [RecordResult(n, f"r{n}", status) for n, status in enumerate(statuses)])
    settings = Settings(store_url=f"sqlite:///{tmp_path}/w.db")
    print_walkthrough(settings, "token", [report], "http://127.0.0.1:8081")
    out = capsys.readouterr().out
    assert said in out
    assert ("Within a minute" in out) == ("stored" in statuses)
