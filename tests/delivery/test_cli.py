"""``gateway queue …`` commands against a real SQLite queue file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli.queue import parse_when, queue_app
from gateway.clock import SystemClock
from gateway.delivery.queue import Bury, DeadLetterFilter
from gateway.delivery.sqlite_queue import SQLiteQueue
from gateway.store import open_store
from tests.delivery.test_queue_contract import make_job

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config file, a destinations file and a queue with three dead letters."""
    queue_path = tmp_path / "queue.db"
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"store_url": f"sqlite:///{tmp_path}/s.db", "queue_url": f"sqlite:///{queue_path}"})
    )
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        yaml.safe_dump(
            {"destinations": [{"name": "shr", "kind": "fhir", "base_url": "http://127.0.0.1:9/fhir"}]}
        )
    )

    async def prepare() -> None:
        queue = SQLiteQueue(queue_path, clock=SystemClock())
        jobs = [make_job(seq, key=f"k{seq}", at=SystemClock().now()) for seq in (1, 2, 3)]
        await queue.enqueue("shr", jobs, after=None, cursor=3)
        claimed = sorted(await queue.claim("shr", worker="w", limit=5, coalesce=False), key=lambda j: j.seq)
        reasons = ["http_422", "http_400", "internal_error"]
        await queue.settle([Bury(job, reason) for job, reason in zip(claimed, reasons, strict=True)])
        await queue.close()

    asyncio.run(prepare())
    return config, destinations, queue_path


def invoke(files: tuple[Path, Path, Path], *args: str) -> tuple[int, str]:
    config, destinations, _ = files
    result = runner.invoke(queue_app, [*args, "--config", str(config), "--destinations", str(destinations)])
    return result.exit_code, result.output


def dead_ids(queue_path: Path) -> list[str]:
    async def read() -> list[str]:
        queue = SQLiteQueue(queue_path, clock=SystemClock())
        try:
            return await queue.dead_letter_ids(DeadLetterFilter())
        finally:
            await queue.close()

    return asyncio.run(read())


def test_status_prints_a_table_and_json(files: tuple[Path, Path, Path]) -> None:
    code, output = invoke(files, "status")
    assert code == 0 and "shr" in output and "closed" in output
    code, output = invoke(files, "status", "--json")
    [row] = orjson.loads(output)
    assert (row["name"], row["dead"], row["depth"], row["cursor"]) == ("shr", 3, 0, 3)


def test_dead_letters_filters_and_show(files: tuple[Path, Path, Path]) -> None:
    code, output = invoke(files, "dead-letters", "--reason", "http_4*", "--json")
    assert code == 0
    assert sorted(row["id"] for row in orjson.loads(output)) == ["shr:1", "shr:2"]
    code, output = invoke(files, "dead-letters", "--since", "1h")
    assert code == 0 and "internal_error" in output
    code, output = invoke(files, "dead-letters", "--show", "shr:3")
    assert code == 0 and orjson.loads(output)["reason"] == "internal_error"
    code, output = invoke(files, "dead-letters", "--show", "shr:99")
    assert code == 1 and "no dead letter" in output


def test_a_letter_whose_resource_moved_on_is_listed_as_superseded(files: tuple[Path, Path, Path]) -> None:
    config = yaml.safe_load(files[0].read_text())
    store = open_store(config["store_url"])
    try:
        for status in ("preliminary", "final"):  # Observation/o1 at version 2; its letter is of version 1
            with store.transaction() as tx:
                tx.update({"resourceType": "Observation", "id": "o1", "status": status, "code": {"text": "t"}})
    finally:
        store.close()
    code, output = invoke(files, "dead-letters", "--json")
    assert code == 0
    marks = {row["id"]: row["superseded_by"] for row in orjson.loads(output)}
    assert marks == {"shr:1": 2, "shr:2": None, "shr:3": None}
    code, output = invoke(files, "dead-letters")
    assert code == 0 and "superseded by v2" in output and output.count("superseded") == 1


def test_replay_one_filtered_or_all(files: tuple[Path, Path, Path]) -> None:
    queue_path = files[2]
    code, output = invoke(files, "replay", "shr:3")
    assert code == 0 and "replayed shr:3" in output
    assert dead_ids(queue_path) == ["shr:1", "shr:2"]
    code, output = invoke(files, "replay", "--reason", "http_400")
    assert code == 0 and "replayed 1 dead letters" in output
    code, output = invoke(files, "replay", "--all")
    assert code == 0 and "replayed 1 dead letters" in output
    assert dead_ids(queue_path) == []


def test_a_grouped_dead_letter_is_one_row_and_one_replay(files: tuple[Path, Path, Path]) -> None:
    queue_path = files[2]

    async def bury_a_group() -> None:
        queue = SQLiteQueue(queue_path, clock=SystemClock())
        jobs = [make_job(seq, key=f"k{seq}", at=SystemClock().now()) for seq in (4, 5, 6)]
        await queue.enqueue("shr", jobs, after=3, cursor=6)
        claimed = await queue.claim("shr", worker="w", limit=5, coalesce=False)
        await queue.settle([Bury(job, "dhis2_E1302", group="EVENT/abc") for job in claimed])
        await queue.close()

    asyncio.run(bury_a_group())
    code, output = invoke(files, "dead-letters", "--reason", "dhis2_E1302", "--json")
    (row,) = orjson.loads(output)
    assert row["group"] == "EVENT/abc" and sorted(row["jobs"]) == ["shr:4", "shr:5", "shr:6"]
    assert sorted(row["resources"]) == ["Observation/o4", "Observation/o5", "Observation/o6"]
    code, output = invoke(files, "dead-letters", "--reason", "dhis2_E1302")
    assert code == 0 and "EVENT/abc" in output
    code, output = invoke(files, "replay", "shr:5")
    assert code == 0 and "replayed shr:5 with the 2 other jobs of its dead letter" in output
    assert dead_ids(queue_path) == ["shr:1", "shr:2", "shr:3"]


def test_replay_and_purge_refuse_vague_requests(files: tuple[Path, Path, Path]) -> None:
    assert invoke(files, "replay")[0] == 2
    assert invoke(files, "replay", "shr:1", "--all")[0] == 2
    assert invoke(files, "purge", "--destination", "shr")[0] == 2
    code, output = invoke(files, "purge", "--destination", "shr", "--until", "2999-01-01T00:00:00", "--yes")
    assert code == 0 and "purged 3 dead letters" in output
    assert dead_ids(files[2]) == []


def test_pause_resume_and_unknown_destinations(files: tuple[Path, Path, Path]) -> None:
    assert invoke(files, "pause", "shr") == (0, "paused shr\n")
    code, output = invoke(files, "status", "--json")
    assert orjson.loads(output)[0]["paused"] is True
    assert invoke(files, "resume", "shr") == (0, "resumed shr\n")
    code, output = invoke(files, "pause", "nowhere")
    assert code == 1 and "no destination is named 'nowhere'" in output


def test_bad_destinations_file_is_a_usage_error(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"destinations": [{"name": "x", "kind": "ftp", "base_url": "http://x"}]}))
    result = runner.invoke(queue_app, ["status", "--config", str(files[0]), "--destinations", str(bad)])
    assert result.exit_code == 2 and "destinations.0.kind" in result.output


def test_broken_criteria_in_a_destinations_file_name_file_and_line(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "destinations:\n"
        "  - name: shr\n"
        "    kind: fhir\n"
        "    base_url: http://127.0.0.1:9/fhir\n"
        "    filter: {criteria: 'Observation.status = '}\n"
    )
    result = runner.invoke(queue_app, ["status", "--config", str(files[0]), "--destinations", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:5: destinations[0].filter.criteria: invalid FHIRPath criteria" in result.output


def test_parse_when_accepts_ages_and_iso_times() -> None:
    assert parse_when("2h", now=10_000.0) == 2_800.0
    assert parse_when("1970-01-01T01:00:00+00:00") == 3600.0
    assert parse_when(None) is None


@pytest.mark.parametrize(
    "args",
    [("pause", "nowhere"), ("resume", "nowhere"), ("replay", "nowhere:1"), ("dead-letters", "--show", "nowhere:1"),
     ("dead-letters", "--destination", "nowhere"), ("replay", "--destination", "nowhere")],
)
def test_an_unknown_destination_or_dead_letter_names_where_the_command_looked(
    files: tuple[Path, Path, Path], args: tuple[str, ...]
) -> None:
    """README, Quickstart: a command that finds nothing (… an unknown destination) names the configuration,
    store and queue it looked in, so a wrong ./gateway.yaml or GATEWAY_CONFIG shows at once."""
    config, _, queue_path = files
    code, output = invoke(files, *args)
    assert code == 1, output
    assert f"configuration {config}" in output and f"queue sqlite:///{queue_path}" in output


def test_status_without_a_live_worker_says_what_starts_delivery_for_this_configuration(
    files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """With the default in-process worker the fix is to start `gateway serve` (or a worker), not to set
    ``delivery.in_process_worker: true``, which the configuration already says."""
    code, output = invoke(files, "status")
    assert code == 0 and "no live delivery worker" in output
    assert "gateway serve" in output and "in_process_worker: true" not in output
    config = yaml.safe_load(files[0].read_text())
    separate = tmp_path / "separate.yaml"
    separate.write_text(yaml.safe_dump({**config, "delivery": {"in_process_worker": False}}))
    result = runner.invoke(queue_app, ["status", "--config", str(separate), "--destinations", str(files[1])])
    assert result.exit_code == 0 and "run `gateway worker`" in result.output
    assert "in_process_worker is false" in result.output
