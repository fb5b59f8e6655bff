"""``gateway backfill``: progress lines off a terminal, the summary with quarantine reasons, and
worker processes on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
from typer.testing import CliRunner

from gateway.cli import app
from gateway.store import open_store
from gateway.store.postgres import split_schema
from tests.backfill.conftest import created, line_list, rewritten, write_jsonl
from tests.backfill.test_resume import config
from tests.conftest import PG_URL

runner = CliRunner()


def test_the_summary_counts_and_names_the_quarantine_reasons(tmp_path: Path) -> None:
    rows = [orjson.dumps(line_list(n)) for n in range(40)]
    rows[3] = b"not json"
    rows[7] = orjson.dumps({**line_list(7), "visit_date": "yesterday"})
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/store.db")
    result = runner.invoke(app, ["backfill", "csv", str(tmp_path / "rows.jsonl"), "-c", str(cfg), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "backfill csv: 40 records" in result.output  # the closing progress line
    assert "csv: 40 record(s): 38 stored, 0 unchanged, 0 deleted, 2 quarantined" in result.output
    assert "structure (the input line itself)" in result.output and "at visit_date" in result.output
    assert "gateway quarantine list --source csv" in result.output
    again = runner.invoke(app, ["backfill", "csv", str(tmp_path / "rows.jsonl"), "-c", str(cfg), "--quiet"])
    assert "1 input(s) already done" in again.output


def test_an_unknown_source_or_input_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/store.db")
    data = str(write_jsonl(tmp_path / "rows.jsonl", 2))
    unknown = runner.invoke(app, ["backfill", "nope", data, "-c", str(cfg)])
    assert unknown.exit_code == 2 and "source 'nope' is not configured" in unknown.output
    missing = runner.invoke(app, ["backfill", "csv", str(tmp_path / "gone.jsonl"), "-c", str(cfg)])
    assert missing.exit_code == 2 and "gone.jsonl: no such file" in missing.output


def test_sqlite_runs_one_writer(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/store.db")
    data = str(write_jsonl(tmp_path / "rows.jsonl", 30))
    result = runner.invoke(app, ["backfill", "csv", data, "-c", str(cfg), "--processes", "3", "-q"])
    assert result.exit_code == 0 and "backfilling with 1 process" in result.output
    assert "30 stored" in result.output


def test_worker_processes_share_a_json_lines_file_on_postgresql(pg_schema_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, pg_schema_url)
    data = str(write_jsonl(tmp_path / "rows.jsonl", 600))
    result = runner.invoke(app, ["backfill", "csv", data, "-c", str(cfg), "--processes", "3", "-q", "--batch", "50"])
    assert result.exit_code == 0, result.output
    assert "csv: 600 record(s): 600 stored" in result.output
    store = open_store(pg_schema_url)
    try:
        assert created(store)["Patient"] == 600 and rewritten(store) == 0
        ranges = [c for c in store.changes(0, 1) if c.backfill]
        assert ranges  # the workers' changes are in the backfill lane
    finally:
        store.close()
    again = runner.invoke(app, ["backfill", "csv", data, "-c", str(cfg), "--processes", "3", "-q"])
    assert "0 record(s)" in again.output and "3 input(s) already done" in again.output


def test_a_backfill_on_postgresql_leaves_the_planner_statistics_current(pg_schema_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, pg_schema_url)
    data = str(write_jsonl(tmp_path / "rows.jsonl", 40))
    result = runner.invoke(app, ["backfill", "csv", data, "-c", str(cfg), "-q"])
    assert result.exit_code == 0, result.output
    _, schema = split_schema(pg_schema_url)
    with psycopg.connect(PG_URL) as conn:
        analyzed = conn.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = %s AND last_analyze IS NOT NULL", (schema,)
        ).fetchall()
    assert {"idx_token", "idx_date", "resources"} <= {row[0] for row in analyzed}


def test_a_broken_json_input_is_one_line_that_quotes_no_record(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"sqlite:///{tmp_path}/store.db")
    (tmp_path / "rows.json").write_bytes(b'[{"patient_name": "Atim Sarah"}, {"patient_name": "Okello')
    result = runner.invoke(app, ["backfill", "csv", str(tmp_path / "rows.json"), "-c", str(cfg)])
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if "rows.json" in line]
    assert line.startswith("gateway: ") and "broken JSON after" in line and line.endswith(")")
    assert "Okello" not in result.stderr and "Atim" not in result.stderr


def test_a_backfill_writes_on_the_backfill_lane_in_short_transactions(tmp_path: Path) -> None:
    """Its store gives way to live writers (the backfill lane, tests/store/test_sqlite_write_turns.py)
    and it commits at most 100 records a transaction: what a live push beside it waits for."""
    from gateway.cli.backfill import _services
    from gateway.cli.common import settings_from

    settings = settings_from(config(tmp_path, f"sqlite:///{tmp_path}/store.db"), False)
    services = _services(settings)
    try:
        assert services.store.feed_lane == "backfill"
        assert services.ingest is not None and services.ingest.group_records == 100
        data = str(write_jsonl(tmp_path / "rows.jsonl", 250))
        other = config(tmp_path, f"sqlite:///{tmp_path}/b.db")
        result = runner.invoke(app, ["backfill", "csv", data, "-c", str(other), "-q"])
        assert result.exit_code == 0 and "250 stored" in result.output
    finally:
        services.close_now()
