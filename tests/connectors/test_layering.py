"""Import layering: delivery uses connectors, never the reverse, and neither has import circles."""

from __future__ import annotations

import ast
from pathlib import Path

import gateway

ROOT = Path(gateway.__file__).parent.parent
PACKAGES = ("gateway.connectors", "gateway.delivery")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for package in PACKAGES
    for path in (ROOT / package.replace(".", "/")).rglob("*.py")
}


def imported(name: str) -> set[str]:
    """Modules ``name`` imports anywhere in its code (function-level imports included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import sub` imports the submodule; `from pkg import name` the package.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return found


def test_connectors_never_import_delivery() -> None:
    offenders = {
        name: sorted(m for m in imported(name) if m.startswith("gateway.delivery"))
        for name in MODULES
        if name.startswith("gateway.connectors")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_queue_protocol_imports_no_backend() -> None:
    assert not {m for m in imported("gateway.delivery.queue") if m.endswith(("sqlite_queue", "redis_queue"))}


def test_no_import_circles_in_delivery_or_connectors() -> None:
    graph = {name: {m for m in imported(name) if m in MODULES and m != name} for name in MODULES}
    circles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                circles.append([*trail[trail.index(target) :], target])
            elif target not in done:
                visit(target, [*trail, target])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert circles == []
