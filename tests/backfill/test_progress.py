"""Progress of a resumed backfill: the bytes a JSON-lines file seeks over count as done, but not as
read by this run, so the rate and the ETA are those of the records this run reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.backfill import expand
from gateway.cli import backfill as cli
from tests.backfill.conftest import Backfill, write_jsonl


class Stop(Exception):
    """Ends a run after its first saved batch, as a kill would."""


def test_a_resumed_json_lines_file_reports_the_skipped_bytes_apart(backfill: Backfill, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", 150)
    item = expand([str(path)])[0]

    def stop(records: int, read: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        backfill.runner.run("csv", item, stop)  # the first 50 records stored, their position saved
    calls: list[tuple[int, int]] = []
    assert backfill.runner.run("csv", item, lambda records, read: calls.append((records, read))).records == 100
    first_50 = sum(len(line) for line in path.read_bytes().splitlines(keepends=True)[:50])
    assert calls[0] == (0, first_50)  # seeked over, said once
    assert [records for records, _ in calls[1:]] == [50, 50]
    assert sum(read for _, read in calls) == path.stat().st_size


def test_the_eta_counts_only_the_bytes_this_run_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("gateway.cli.backfill.time.monotonic", lambda: now[0])
    item = expand([str(write_jsonl(tmp_path / "rows.jsonl", 10))])[0]
    meter = cli._Meter("csv", [item], quiet=True)
    meter.total = 1000
    meter.advance(0, 500)  # half the file done by an earlier run
    now[0] += 10
    meter.advance(100, 100)  # this run: 100 bytes in 10 s, 400 to go
    meter._line()
    line = capsys.readouterr().out
    assert "60.0% of 1,000 bytes" in line
    assert "ETA 0m40s" in line  # not 0m06s, as if the 500 skipped bytes had been read in those 10 s
