"""The package's shape: surfaces that resolve, and a command line that imports nothing it does not run.

The layers and the absence of import circles are import-linter contracts (``pyproject.toml``),
checked by ``make test`` before pytest runs.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import dhis2_sandbox
import gateway

ROOT = Path(gateway.__file__).parent
SANDBOX = Path(dhis2_sandbox.__file__).parent
STUBS = sorted([*ROOT.rglob("__init__.pyi"), *SANDBOX.rglob("__init__.pyi")])
PACKAGES = [".".join(stub.parent.relative_to(ROOT.parent).parts) for stub in STUBS]


def stub_names(stub: Path) -> set[str]:
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    return {alias.asname or alias.name for node in imports for alias in node.names}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_of_a_surface_resolves(package: str) -> None:
    module = importlib.import_module(package)
    names = stub_names(ROOT.parent / package.replace(".", "/") / "__init__.pyi")
    assert set(module.__all__) == names
    missing = [name for name in sorted(names) if getattr(module, name, None) is None]
    assert missing == []


def test_the_surfaces_cover_the_packages() -> None:
    eager = [
        str(init.relative_to(ROOT.parent))
        for init in ROOT.rglob("__init__.py")
        if init.parent != ROOT and not init.with_suffix(".pyi").exists() and init.parent.name != "cli"
    ]
    assert eager == []


def test_help_imports_no_service_package() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['gateway', '--help']\n"
        "try:\n"
        "    runpy.run_module('gateway', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(m for m in sys.modules\n"
        "                      if m.startswith(('gateway', 'dhis2_sandbox', 'fastapi', 'httpx', 'pydantic')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split("\n")[-2].split())
    light = ("gateway.cli", "gateway.errors", "gateway.jsonio")  # jsonio: orjson and the standard library
    heavy = {m for m in loaded if not m.startswith(light) and m != "gateway"}
    assert heavy == set()


def test_the_package_parses_and_writes_json_only_through_jsonio() -> None:
    """A dump without jsonio's ``default`` would fail on a client's 5.40 (a 500); a parse would lose it."""
    calls = []
    for path in ROOT.rglob("*.py"):
        if path == ROOT / "jsonio.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "orjson"
                    and node.attr in ("dumps", "loads")):
                calls.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert calls == []
