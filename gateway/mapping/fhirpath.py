"""FHIRPath through fhirpathpy: syntax checking, AST analysis, and the evaluators.

``fhirpathpy.compile`` accepts broken input silently (``a..b`` evaluates to nothing), so
``parse_fhirpath`` re-runs its ANTLR parser with a listener that raises. The AST it returns
is fhirpathpy's own, analysed here for what the compiler needs: is the expression a plain
member path, which functions and variables does it use, which record fields does it read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, ParseTreeWalker  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import FP_Type, ResourceNode
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from gateway.errors import ConfigError
from gateway.mapping.errors import MappingError

__all__ = [
    "CompileError",
    "Evaluator",
    "check_functions",
    "fhirpath_evaluator",
    "identifier",
    "interpreted_evaluator",
    "member_reads",
    "only_child",
    "parse_fhirpath",
    "plain",
    "simple_path",
    "variables_of",
]

Evaluator = Callable[[Any, dict[str, list[Any]]], list[Any]]

# Functions whose result changes between runs: a replay must reproduce the same Bundle.
_NON_DETERMINISTIC = frozenset({"now", "today", "timeOfDay", "trace", "defineVariable"})


class CompileError(ConfigError):
    """An expression in a mapping file is invalid (the message says why)."""


class _RaisingListener(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
        raise CompileError(f"FHIRPath syntax error at column {column + 1}: {msg}")


def parse_fhirpath(text: str) -> dict[str, Any]:
    """Parse FHIRPath into fhirpathpy's AST, raising ``CompileError`` on any syntax error.

    ``fhirpathpy.compile`` itself accepts broken input silently (``a..b`` evaluates to
    nothing), so syntax is checked here with a listener that raises.
    """
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.buildParseTrees = True
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    ast_listener = ASTPathListener()  # type: ignore[no-untyped-call]
    try:
        tree = parser.expression()
        if parser.getCurrentToken().type != FHIRPathParser.EOF:
            raise CompileError(f"unexpected text after the expression: {parser.getCurrentToken().text!r}")
        ParseTreeWalker().walk(ast_listener, tree)
    except CompileError:
        raise
    except Exception as exc:  # antlr raises assorted internal errors on malformed input
        raise CompileError(f"FHIRPath syntax error: {exc}") from exc
    node: dict[str, Any] = ast_listener.parentStack[0]
    return node


def identifier(node: dict[str, Any]) -> str:
    text: str = node["terminalNodeText"][0] if node.get("terminalNodeText") else node.get("text", "")
    return text[1:-1] if text.startswith("`") and text.endswith("`") else text


def only_child(node: dict[str, Any], node_type: str) -> dict[str, Any] | None:
    children = node.get("children") or []
    if len(children) == 1 and children[0].get("type") == node_type:
        child: dict[str, Any] = children[0]
        return child
    return None


def simple_path(node: dict[str, Any]) -> tuple[str | None, tuple[str, ...]] | None:
    """``(variable, keys)`` if the node is a pure member path like ``%item.a.b``."""
    node_type = node.get("type")
    if node_type == "InvocationExpression":
        children = node.get("children") or []
        if len(children) != 2 or children[1].get("type") != "MemberInvocation":
            return None
        base = simple_path(children[0])
        ident = only_child(children[1], "Identifier")
        if base is None or ident is None:
            return None
        return base[0], (*base[1], identifier(ident))
    if node_type == "TermExpression":
        term = (node.get("children") or [{}])[0]
        if term.get("type") == "InvocationTerm":
            member = only_child(term, "MemberInvocation")
            ident = only_child(member, "Identifier") if member else None
            return (None, (identifier(ident),)) if ident else None
        if term.get("type") == "ExternalConstantTerm":
            constant = only_child(term, "ExternalConstant")
            ident = only_child(constant, "Identifier") if constant else None
            return (identifier(ident), ()) if ident else None
    return None


def _walk_ast(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("children") or []:
        yield from _walk_ast(child)


def check_functions(ast: dict[str, Any]) -> None:
    for node in _walk_ast(ast):
        if node.get("type") == "Functn":
            name = identifier(node["children"][0])
            if name in _NON_DETERMINISTIC:
                raise CompileError(f"{name}() is not allowed: a replay must produce the same Bundle")
            if name not in invocation_registry:
                raise CompileError(f"unknown FHIRPath function {name}()")


def variables_of(ast: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for node in _walk_ast(ast):
        if node.get("type") == "ExternalConstant":
            ident = only_child(node, "Identifier")
            if ident is not None:
                found.add(identifier(ident))
            else:
                literal = (node.get("children") or [{}])[0]
                found.add(str(literal.get("text", "")).strip("'"))
    return found


def member_reads(ast: dict[str, Any]) -> list[tuple[str | None, tuple[str, ...]]]:
    """Maximal member paths in an AST (approximate: function arguments count as roots)."""
    reads: list[tuple[str | None, tuple[str, ...]]] = []

    def visit(node: dict[str, Any]) -> None:
        path = simple_path(node)
        if path is not None:
            reads.append(path)
            return
        for child in node.get("children") or []:
            visit(child)

    visit(ast)
    return reads


def plain(values: list[Any]) -> list[Any]:
    """fhirpathpy results → JSON-ready Python values."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, ResourceNode):
            value = value.data
        if isinstance(value, Decimal):
            out.append(
                int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
            )
        elif isinstance(value, FP_Type):
            out.append(str(value))
        elif value is not None:
            out.append(value)
    return out


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


def fhirpath_evaluator(text: str) -> Evaluator:
    compiled = fhirpathpy.compile(text)

    def run(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        try:
            return plain(compiled(*_nodes(record, env)))
        except Exception as exc:  # fhirpathpy raises bare Exception, KeyError, TypeError … on odd data
            raise MappingError(
                text, f"FHIRPath evaluation failed: {type(exc).__name__}", code="processing"
            ) from exc

    return run


def interpreted_evaluator(text: str) -> Evaluator:
    def run(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        try:
            node, variables = _nodes(record, env)
            return plain(fhirpathpy.evaluate(node, text, variables))
        except Exception as exc:  # see _fhirpath
            raise MappingError(
                text, f"FHIRPath evaluation failed: {type(exc).__name__}", code="processing"
            ) from exc

    return run
