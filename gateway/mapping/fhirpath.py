"""FHIRPath in mapping files: the checks mappings add, and the evaluators for source records.

Parsing and AST analysis are ``gateway.fhir.fhirpath``'s; here a syntax error becomes a
``CompileError`` like every other problem of a mapping expression, functions whose result
changes between runs are refused (a replay must reproduce the same Bundle), and the
evaluators turn fhirpathpy's failures on odd records into ``MappingError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode

from gateway.errors import ConfigError
from gateway.fhir import FhirPathError, function_names, plain
from gateway.fhir import parse_fhirpath as parse_any_fhirpath
from gateway.mapping.errors import MappingError

__all__ = [
    "CompileError",
    "Evaluator",
    "check_functions",
    "fhirpath_evaluator",
    "interpreted_evaluator",
    "parse_fhirpath",
]

Evaluator = Callable[[Any, dict[str, list[Any]]], list[Any]]

# Functions whose result changes between runs: a replay must reproduce the same Bundle.
_NON_DETERMINISTIC = frozenset({"now", "today", "timeOfDay", "trace", "defineVariable"})


class CompileError(ConfigError):
    """An expression in a mapping file is invalid (the message says why)."""


def parse_fhirpath(text: str) -> dict[str, Any]:
    """Parse FHIRPath into fhirpathpy's AST, raising ``CompileError`` on any syntax error."""
    try:
        return parse_any_fhirpath(text)
    except FhirPathError as exc:
        raise CompileError(str(exc)) from exc


def check_functions(ast: dict[str, Any]) -> None:
    """Refuse functions fhirpathpy lacks and those whose result changes between runs."""
    for name in function_names(ast):
        if name in _NON_DETERMINISTIC:
            raise CompileError(f"{name}() is not allowed: a replay must produce the same Bundle")
        if name not in invocation_registry:
            raise CompileError(f"unknown FHIRPath function {name}()")


def _nodes(record: Any, env: dict[str, list[Any]]) -> tuple[Any, dict[str, list[Any]]]:
    """Wrap objects in fhirpathpy nodes: on raw dicts fhirpathpy takes a first step that
    starts with a non-lowercase character (``_id``, ``@case_id``) for a resourceType filter
    and fails with KeyError on records that have no resourceType."""
    wrap = ResourceNode.create_node
    wrapped = {
        name: [wrap(value) if type(value) is dict else value for value in values]  # type: ignore[no-untyped-call]
        for name, values in env.items()
    }
    return wrap(record), wrapped  # type: ignore[no-untyped-call]


_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _why(exc: Exception) -> str:
    """What fhirpathpy said (``Expected string, but got 11.8``), short: it may quote the record's
    value, which belongs in the OperationOutcome (never in logs)."""
    # Object reprs carry memory addresses: the same record must give the same message.
    said = _OBJECT_REPR.sub("a node", " ".join(str(exc).split()))
    name = type(exc).__name__
    if not said or said == name:
        return name
    return f"{name}: {said[:117] + '...' if len(said) > 120 else said}"


def fhirpath_evaluator(text: str) -> Evaluator:
    """``text`` compiled once by fhirpathpy, run on records (failures become ``MappingError``)."""
    compiled = fhirpathpy.compile(text)

    def run(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        try:
            return plain(compiled(*_nodes(record, env)))
        except Exception as exc:  # fhirpathpy raises bare Exception, KeyError, TypeError … on odd data
            raise MappingError(text, f"FHIRPath evaluation failed: {_why(exc)}", code="processing") from exc

    return run


def interpreted_evaluator(text: str) -> Evaluator:
    """``text`` re-parsed by fhirpathpy on every call (benchmarks only)."""

    def run(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        try:
            node, variables = _nodes(record, env)
            return plain(fhirpathpy.evaluate(node, text, variables))
        except Exception as exc:  # as in fhirpath_evaluator
            raise MappingError(text, f"FHIRPath evaluation failed: {_why(exc)}", code="processing") from exc

    return run
