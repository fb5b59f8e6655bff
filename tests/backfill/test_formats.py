"""Every input format a backfill reads, stored through the ingest service like a push."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import orjson
import pytest

from gateway.backfill import BackfillInputError, Input, expand, position_key, split
from tests.backfill.conftest import MAPPINGS, Backfill, created, held, line_list, write_csv, write_jsonl
from tests.pull.conftest import odk_household
from tests.support.live_server import LiveServer


def run_all(backfill: Backfill, source: str, paths: list[str]) -> int:
    """Backfill every input; records handled."""
    return sum(backfill.runner.run(source, item).records for item in expand(paths))


def test_json_lines(backfill: Backfill, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", 120)
    report = backfill.runner.run("csv", expand([str(path)])[0])
    assert (report.records, report.stored, report.quarantined) == (120, 120, 0)
    assert created(backfill.store)["Patient"] == 120


def test_a_json_array_is_read_item_by_item(backfill: Backfill, tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_bytes(orjson.dumps([line_list(n) for n in range(75)]))
    assert run_all(backfill, "csv", [str(path)]) == 75
    assert created(backfill.store)["Patient"] == 75


def test_csv_rows(backfill: Backfill, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "rows.csv", 60)
    report = backfill.runner.run("csv", expand([str(path)])[0])
    assert (report.stored, report.quarantined) == (60, 0)
    assert created(backfill.store)["Patient"] == 60


def test_semicolon_separated_csv_rows(backfill: Backfill, tmp_path: Path) -> None:
    comma = write_csv(tmp_path / "rows.csv", 30)
    path = tmp_path / "rows-fr.csv"
    rows = list(csv.reader(io.StringIO(comma.read_text(encoding="utf-8"))))
    with path.open("w", encoding="utf-8", newline="") as out:
        csv.writer(out, delimiter=";").writerows(rows)
    report = backfill.runner.run("csv", expand([str(path)])[0])
    assert (report.stored, report.quarantined) == (30, 0)
    assert created(backfill.store)["Patient"] == 30


def test_csv_trailing_columns_without_a_name(backfill: Backfill, tmp_path: Path) -> None:
    # As Excel saves a sheet whose last columns were once formatted: ";;" after the header and the
    # first rows, none after the later ones. A value under such a column is quarantined, not dropped.
    rows = list(csv.reader(io.StringIO(write_csv(tmp_path / "rows.csv", 20).read_text(encoding="utf-8"))))
    lines = [";".join(rows[0]) + ";;"] + [";".join(row) + (";;" if n < 16 else "") for n, row in enumerate(rows[1:])]
    lines[5] = lines[5][:-2] + ";oops;"
    path = tmp_path / "rows-excel.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    report = backfill.runner.run("csv", expand([str(path)])[0])
    assert (report.stored, report.quarantined) == (19, 1)
    (letter,) = held(backfill.store, "csv")
    assert "line 6: a value in column" in letter.outcome["issue"][0]["diagnostics"]


def test_a_commcare_form_api_page(backfill: Backfill, tmp_path: Path) -> None:
    forms = [json.loads((MAPPINGS / "commcare" / "tests" / f"{case}.input.json").read_text(encoding="utf-8"))
             for case in ("tb-dot-visit", "household-registration-single-repeat")]  # fmt: skip
    page = {"meta": {"limit": 2, "next": None, "offset": 0, "total_count": 2}, "objects": forms}
    path = tmp_path / "forms.json"
    path.write_bytes(orjson.dumps(page))
    report = backfill.runner.run("commcare", expand([str(path)])[0])
    assert (report.records, report.stored, report.quarantined) == (2, 2, 0)
    assert sum(created(backfill.store).values()) >= 2


def test_an_odk_central_odata_export(backfill: Backfill, tmp_path: Path) -> None:
    rows = [odk_household(n) for n in range(1, 4)]
    for row in rows:
        row["__system"]["submissionDate"] = "2025-05-06T10:00:00.000Z"  # as the server stamped it
    export = {"@odata.context": "https://odk.example/v1/projects/4/forms/x.svc/$metadata#Submissions", "value": rows}
    path = tmp_path / "submissions.json"
    path.write_bytes(orjson.dumps(export))
    report = backfill.runner.run("odk", expand([str(path)])[0])
    assert (report.records, report.stored, report.quarantined) == (3, 3, 0)


def test_a_zip_of_exports_and_a_directory(backfill: Backfill, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", 20)
    write_csv(folder / "b.csv", 20, start=20)
    with zipfile.ZipFile(folder / "c.zip", "w") as archive:
        archive.writestr("c1.csv", write_csv(tmp_path / "c1.csv", 10, start=40).read_bytes())
        archive.writestr("c2.jsonl", write_jsonl(tmp_path / "c2.jsonl", 10, start=50).read_bytes())
    (folder / "notes.txt").write_text("not an export")
    assert [Path(i.name).name for i in expand([str(folder)])] == ["a.jsonl", "b.csv", "c.zip"]
    assert run_all(backfill, "csv", [str(folder)]) == 60
    assert created(backfill.store)["Patient"] == 60


def test_a_url_is_streamed(backfill: Backfill, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    path = write_jsonl(tmp_path / "rows.jsonl", 40)
    app = Starlette(routes=[Route("/export/rows.jsonl", lambda _: FileResponse(path), methods=["GET", "HEAD"])])
    with LiveServer(app) as server:
        [item] = expand([f"{server.url}/export/rows.jsonl"])
        assert item.is_url and item.size == path.stat().st_size
        assert backfill.runner.run("csv", item).stored == 40
    assert created(backfill.store)["Patient"] == 40


def test_broken_lines_and_unmappable_records_are_quarantined_with_a_summary(
    backfill: Backfill, tmp_path: Path
) -> None:
    rows = [orjson.dumps(line_list(n)) for n in range(30)]
    rows[5] = b'{"record_id": "LL-broken", '  # cut off
    rows[9] = orjson.dumps({**line_list(9), "visit_date": "last tuesday"})
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    report = backfill.runner.run("csv", expand([str(tmp_path / "rows.jsonl")])[0])
    assert (report.records, report.stored, report.quarantined) == (30, 28, 2)
    assert report.reasons["structure (the input line itself)"] == 1
    assert sum(report.reasons.values()) == 2
    kept = held(backfill.store, "csv")
    assert len(kept) == 2
    broken = next(k for k in kept if k.record_key is None)
    assert broken.body == rows[5].strip()
    assert "line 6" in orjson.dumps(broken.outcome).decode()  # names the file's line


def test_a_record_the_mapping_refuses_names_its_file_and_line(backfill: Backfill, tmp_path: Path) -> None:
    # In a file of a million rows, "visit_date: 'last tuesday' is not a date" must say where it is.
    path = write_csv(tmp_path / "rows.csv", 12)
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    lines[8] = lines[8].replace("2025-05-05", "last tuesday")
    path.write_text("\r\n".join(lines), encoding="utf-8")
    report = backfill.runner.run("csv", expand([str(path)])[0])
    assert (report.stored, report.quarantined) == (11, 1)
    (kept,) = held(backfill.store, "csv")
    diagnostics = [issue["diagnostics"] for issue in kept.outcome["issue"]]
    assert "is not a date" in diagnostics[0]
    assert diagnostics[1:] == [f"read from {path}: line 9"]


def test_a_rerun_of_a_finished_input_reads_nothing(backfill: Backfill, tmp_path: Path) -> None:
    item = expand([str(write_jsonl(tmp_path / "rows.jsonl", 30))])[0]
    assert backfill.runner.run("csv", item).records == 30
    again = backfill.runner.run("csv", item)
    assert (again.records, again.skipped_inputs) == (0, 1)
    backfill.runner.forget("csv", item)
    assert backfill.runner.run("csv", item).unchanged == 30  # read again: nothing new written


def test_byte_ranges_of_a_json_lines_file_cover_every_line_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", 1001)
    [whole] = expand([str(path)])
    parts = split(whole, 4)
    assert len(parts) == 4 and parts[0].start == 0 and parts[-1].end == whole.size
    data = path.read_bytes()
    assert all(data[p.start - 1 : p.start] == b"\n" for p in parts[1:])  # each starts at a line start
    assert len({p.key for p in parts}) == 4
    assert split(Input("x.csv", "file:x", "csv", 10), 4) == [Input("x.csv", "file:x", "csv", 10)]


def test_ranges_backfilled_separately_store_each_record_once(backfill: Backfill, tmp_path: Path) -> None:
    [whole] = expand([str(write_jsonl(tmp_path / "rows.jsonl", 203))])
    handled = sum(backfill.runner.run("csv", part).records for part in split(whole, 3))
    assert handled == 203
    assert created(backfill.store)["Patient"] == 203


@pytest.mark.parametrize(("name", "content", "message"), [
    ("rows.txt", b"{}", "unknown format"),
    ("rows.json", b'[{"a": 1}, {"b": ', "broken JSON"),
    ("rows.json", b'{"meta": {}}', "without an objects or value array"),
    ("rows.csv", b"a,a\r\n1,2\r\n", "line 1: the CSV header repeats"),
])  # fmt: skip
def test_unreadable_inputs_are_refused_naming_the_file(
    backfill: Backfill, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BackfillInputError) as caught:
        for item in expand([str(path)]):
            backfill.runner.run("csv", item)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_missing_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackfillInputError, match="no such file"):
        expand([str(tmp_path / "nope.jsonl")])


def test_a_url_resumes_after_the_records_already_handled(backfill: Backfill, tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    path = write_jsonl(tmp_path / "rows.jsonl", 30)
    path.write_bytes(b"\n" + path.read_bytes().replace(b"\n", b"\n\n", 5))  # blank lines are no records
    app = Starlette(routes=[Route("/rows.jsonl", lambda _: FileResponse(path), methods=["GET", "HEAD"])])
    with LiveServer(app) as server:
        [item] = expand([f"{server.url}/rows.jsonl"])
        backfill.store.set_pull_cursor(position_key("csv", item), orjson.dumps({"records": 12}).decode())
        report = backfill.runner.run("csv", item)
    assert (report.records, report.stored) == (18, 18)
    assert created(backfill.store)["Patient"] == 18  # rows 12-29 only
