"""An unchanged mappings folder compiles once per process; any change to a file compiles it again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gateway.mapping import load_mappings
from gateway.mapping.errors import LoadIssue
from tests.mapping.conftest import MAPPINGS


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    for part in ("conceptmaps", "csv"):  # one small set: compiling it is what each test waits for
        shutil.copytree(MAPPINGS / part, root / part)
    return root


def test_an_unchanged_folder_gives_the_same_compiled_sets_in_fresh_containers(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    first, second = load_mappings(root), load_mappings(root)
    assert first.issues == second.issues == []
    assert first.sets["csv"] is second.sets["csv"]
    first.sets.clear()  # a caller changing its containers changes nothing for the next
    first.issues.append(LoadIssue("x", 1, "", "made up"))
    third = load_mappings(root)
    assert "csv" in third.sets and third.issues == []


def test_a_rewrite_of_the_same_size_and_time_is_compiled_again(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    before = load_mappings(root)
    set_file = root / "csv" / "set.yaml"
    text = set_file.read_text(encoding="utf-8")
    stat = set_file.stat()
    # One character swapped for another: same size; the old times put back, as a quick rewrite may leave them.
    changed = text.replace("title:", "titel:", 1)
    assert changed != text and len(changed) == len(text)
    set_file.write_text(changed, encoding="utf-8")
    os.utime(set_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = load_mappings(root)
    assert "csv" not in after.sets
    assert any(issue.file == str(set_file) and "unknown field" in issue.message for issue in after.issues)
    set_file.write_text(text, encoding="utf-8")
    again = load_mappings(root)
    assert again.issues == [] and again.sets["csv"] is before.sets["csv"]


def test_a_new_file_is_seen(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    assert load_mappings(root).issues == []
    (root / "csv" / "broken.yaml").write_text("resource: [\n", encoding="utf-8")
    issues = load_mappings(root).issues
    assert any(issue.file.endswith("broken.yaml") for issue in issues)
