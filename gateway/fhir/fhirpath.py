"""FHIRPath through fhirpathpy: the syntax check every configured expression passes, and AST analysis.

``fhirpathpy.compile`` accepts broken input silently (``a..b`` evaluates to nothing), so
``parse_fhirpath`` re-runs its ANTLR parser with a listener that raises. The AST it returns
is fhirpathpy's own, analysed here for what compilers need: is the expression a plain
member path, which functions and variables does it use, which record fields does it read.

    check_fhirpath("Observation.status = 'final'")     # the AST, or FhirPathError saying why
    compile_fhirpath("Observation.status = 'final'")   # checked, then fhirpathpy's R4 evaluator
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

__all__ = [
    "FhirPathError",
    "check_fhirpath",
    "compile_fhirpath",
    "function_names",
    "identifier",
    "member_reads",
    "only_child",
    "parse_fhirpath",
    "plain",
    "simple_path",
    "variables_of",
    "walk_ast",
]


class FhirPathError(ConfigError, ValueError):
    """A FHIRPath expression is invalid (the message says why).

    Also a ``ValueError`` because pydantic validators raise it and only turn those into
    validation errors.
    """


class _RaisingListener(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
        raise FhirPathError(f"FHIRPath syntax error at column {column + 1}: {msg}")


def parse_fhirpath(text: str) -> dict[str, Any]:
    """Parse FHIRPath into fhirpathpy's AST, raising ``FhirPathError`` on any syntax error.

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
            raise FhirPathError(f"unexpected text after the expression: {parser.getCurrentToken().text!r}")
        ParseTreeWalker().walk(ast_listener, tree)
    except FhirPathError:
        raise
    except Exception as exc:  # antlr raises assorted internal errors on malformed input
        raise FhirPathError(f"FHIRPath syntax error: {exc}") from exc
    node: dict[str, Any] = ast_listener.parentStack[0]
    return node


def check_fhirpath(text: str) -> dict[str, Any]:
    """The AST of ``text`` if it parses and calls only functions fhirpathpy has; else ``FhirPathError``."""
    ast = parse_fhirpath(text)
    for name in function_names(ast):
        if name not in invocation_registry:
            raise FhirPathError(f"unknown FHIRPath function {name}()")
    return ast


def compile_fhirpath(text: str) -> Callable[[Any, Any], list[Any]]:
    """Check ``text`` (``check_fhirpath``), then compile it for FHIR R4 resources: ``run(resource, env)``."""
    check_fhirpath(text)
    # Loaded on first use: the R4 type tables take tens of milliseconds to import, and
    # only expressions on FHIR resources need them.
    from fhirpathpy.models import models

    compiled: Callable[[Any, Any], list[Any]] = fhirpathpy.compile(text, models["r4"])
    return compiled


def walk_ast(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an AST, parents before children."""
    yield node
    for child in node.get("children") or []:
        yield from walk_ast(child)


def function_names(ast: dict[str, Any]) -> Iterator[str]:
    """The names of the functions an AST calls, in ``walk_ast`` order."""
    for node in walk_ast(ast):
        if node.get("type") == "Functn":
            yield identifier(node["children"][0])


def identifier(node: dict[str, Any]) -> str:
    """The name an identifier node spells, without backquotes."""
    text: str = node["terminalNodeText"][0] if node.get("terminalNodeText") else node.get("text", "")
    return text[1:-1] if text.startswith("`") and text.endswith("`") else text


def only_child(node: dict[str, Any], node_type: str) -> dict[str, Any] | None:
    """The single child of ``node`` if it has exactly one and of type ``node_type``."""
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


def variables_of(ast: dict[str, Any]) -> set[str]:
    """The ``%variables`` an AST reads."""
    found: set[str] = set()
    for node in walk_ast(ast):
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
