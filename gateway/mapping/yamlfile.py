"""YAML reading that remembers the line of every node, for file:line error messages.

Scalars resolve as in YAML 1.2 rather than PyYAML's 1.1 defaults, because mapping files are
full of answer codes: ``yes``/``no``/``on``/``off`` stay strings, ``10:30`` is not a
sexagesimal integer, ``0123`` keeps its leading zero and ``2025-06-03`` is text (a FHIR
date), not a timestamp (YAML 1.2 has none; 1.1's made Python dates, and crashed on
``2025-13-01``). Duplicate keys are errors (PyYAML
silently keeps the last one, which hides typos in long rule lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError

__all__ = ["NodePath", "YamlDocument", "YamlSyntaxError", "format_path", "read_yaml"]

NodePath = tuple[str | int, ...]


class YamlSyntaxError(ConfigError):
    """The file is not well-formed YAML (or has duplicate keys)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema booleans and numbers."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+]?[0-9]+)?|(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+)$"),
    list("-+0123456789"),
)


@dataclass(slots=True)
class YamlDocument:
    """Plain Python data from a YAML file plus the line (1-based) of every node."""

    data: Any
    lines: dict[NodePath, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int:
        """The line of the deepest node on ``path`` that exists (1 if none)."""
        parts = tuple(path)
        while parts:
            line = self.lines.get(parts)
            if line is not None:
                return line
            parts = parts[:-1]
        return self.lines.get((), 1)

    def data_path(self, loc: Iterable[str | int]) -> NodePath:
        """Keep only the parts of a pydantic error location that name real nodes.

        Discriminated unions add their tag (``'observation'``) to locations; walking the
        data drops such parts.
        """
        node = self.data
        kept: list[str | int] = []
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
                kept.append(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
                kept.append(part)
        return tuple(kept)


def format_path(path: Iterable[str | int]) -> str:
    """``('rules', 3, 'value')`` → ``rules[3].value``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def read_yaml(path: Path) -> YamlDocument:
    """Parse one YAML document, recording node lines; raises ``YamlSyntaxError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlSyntaxError(0, f"cannot read: {exc}") from exc
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(None)
        if node is not None:
            doc.data = _construct(loader, node, (), doc.lines)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise YamlSyntaxError(line, f"invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(0, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


def _construct(loader: _Loader, node: yaml.Node, path: NodePath, lines: dict[NodePath, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                raise YamlSyntaxError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            key = str(key)
            if key in result:
                raise YamlSyntaxError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            # errors about a value point at its key's line: that is where authors look
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, index), lines) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
