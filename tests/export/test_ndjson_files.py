"""NDJSON files split where a limit falls, never inside a line, and count what they hold."""

from __future__ import annotations

from pathlib import Path

from gateway.export import NdjsonFiles


def _lines(n: int, size: int = 10) -> list[bytes]:
    return [f'{{"i":{i:0{size - 6}d}}}'.encode() for i in range(n)]


def test_files_split_past_the_count_and_the_byte_limits(tmp_path: Path) -> None:
    files = NdjsonFiles(tmp_path, max_bytes=10_000, max_lines=4)
    lines = _lines(10)
    files.write_page("Patient", lines[:3])
    files.write_page("Patient", lines[3:])
    files.write_page("Observation", lines[:2])
    done = files.close()
    assert [(d["file"], d["count"]) for d in done] == [
        ("Patient-1.ndjson", 4), ("Patient-2.ndjson", 4), ("Patient-3.ndjson", 2), ("Observation-1.ndjson", 2)]
    joined = b"".join((tmp_path / f"Patient-{n}.ndjson").read_bytes() for n in (1, 2, 3))
    assert joined == b"\n".join(lines) + b"\n"

    by_bytes = NdjsonFiles(tmp_path / "b", max_bytes=25, max_lines=100)
    (tmp_path / "b").mkdir()
    by_bytes.write_page("Patient", lines)
    sizes = [(tmp_path / "b" / d["file"]).stat().st_size for d in by_bytes.close()]
    assert sizes == [22] * 5  # two 11-byte lines a file: a third would pass 25


def test_a_line_longer_than_the_byte_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    files = NdjsonFiles(tmp_path, max_bytes=30, max_lines=100)
    long = b'{"x":"' + b"y" * 50 + b'"}'
    files.write_page("Patient", [*_lines(1), long, *_lines(1)])
    assert [d["count"] for d in files.close()] == [1, 1, 1]
