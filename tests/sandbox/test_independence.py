"""The DHIS2 sandbox is an independent judge: it imports nothing of the gateway.

It decides whether what the connector sends would be accepted by DHIS2, so a rule borrowed
from the connector (value types, UIDs, periods) would hide a mistake both make. Two checks:
what importing and running it loads, and what its source files name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import dhis2_sandbox

PACKAGE = Path(dhis2_sandbox.__file__).parent


def _imported_names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                # A relative import may only stay inside the package (``from . import x``).
                depth = len(path.relative_to(PACKAGE).parts) - 1
                names.append((node.lineno, "<outside>" if node.level > depth + 1 else "dhis2_sandbox"))
            else:
                names.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names.extend((node.lineno, arg.value) for arg in node.args if isinstance(arg, ast.Constant)
                         and isinstance(arg.value, str))  # fmt: skip
    return names


def test_no_source_file_of_the_sandbox_names_the_gateway() -> None:
    files = sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi")])
    assert len(files) > 15  # the whole package, not an empty glob
    offending = [
        f"{path.relative_to(PACKAGE)}:{line} imports {name}"
        for path in files
        for line, name in _imported_names(path)
        if name == "gateway" or name.startswith("gateway.") or name == "<outside>"
    ]
    assert offending == []


def test_the_scan_sees_the_imports_it_forbids(tmp_path: Path) -> None:
    probe = PACKAGE / "tracker_validation.py"
    names = {name for _, name in _imported_names(probe)}
    assert "dhis2_sandbox.valuetypes" in names  # the scan reads real imports
    bad = tmp_path / "bad.py"
    bad.write_text("import gateway.connectors\nfrom gateway.connectors.dhis2 import check_value\n")
    assert [name for _, name in _imported_names(bad)] == ["gateway.connectors", "gateway.connectors.dhis2"]


def test_importing_and_running_the_sandbox_loads_no_gateway_module() -> None:
    # A fresh interpreter: this test process has the gateway loaded already.
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import httpx, anyio
        import dhis2_sandbox
        for info in pkgutil.walk_packages(dhis2_sandbox.__path__, "dhis2_sandbox."):
            importlib.import_module(info.name)
        from dhis2_sandbox import DEFAULT_TOKEN, create_sandbox_app

        async def main():
            app = create_sandbox_app(None, None)
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=transport, base_url="http://s", headers=headers) as c:
                    r = await c.post("/api/tracker", params={"async": "false"}, json={"trackedEntities": []})
                    assert r.status_code == 200, r.text
                    r = await c.post("/api/dataValueSets", json={"dataValues": [
                        {"dataElement": "x", "period": "2024W5", "orgUnit": "y", "value": "1"}]})
                    assert r.status_code in (200, 409), r.text

        anyio.run(main)
        print(sorted(m for m in sys.modules if m == "gateway" or m.startswith("gateway.")))
        """
    )
    root = PACKAGE.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
