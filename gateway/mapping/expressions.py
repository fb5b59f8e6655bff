"""Compiling mapping expressions: ``<FHIRPath> | converter(args) | …``.

Each expression is compiled once, when the mapping is loaded, into a plain Python
callable ``(record, env) -> list`` (a FHIRPath collection). The source part is compiled
by the cheapest route that keeps FHIRPath's meaning:

* a literal (``'body_weight'``, ``12``, ``true``) and every converter after it are folded
  into a constant at load time (so an unmapped literal code is a load error);
* a simple path (``form.vitals.weight_kg``, ``%item.`member/name```) becomes a walk of
  dict lookups: absent keys and nulls give nothing, lists are flattened as FHIRPath does;
* ``path = 'literal'``, ``!=``, ``.exists()``, ``.empty()``, ``and``/``or``/``not()`` of
  those become small closures with FHIRPath's empty-propagating logic, and text joins
  (``'village:' + village``) become string joins;
* anything else is parsed once with ``fhirpathpy`` and run through its compiled form.

Only the last route touches ``fhirpathpy`` per record. Differences from FHIRPath on FHIR
resources, both deliberate for non-FHIR source data: simple paths do not merge ``_name``
primitive-extension siblings and do not treat a capitalised first step as a type filter.

``interpret=True`` (benchmarks only) instead sends every source through
``fhirpathpy.evaluate`` on each call, re-parsing it each time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy

from gateway.fhir import member_reads, plain, simple_path, variables_of
from gateway.mapping.converters import (
    CONVERTERS,
    CompileContext,
    Converter,
    ConverterArgError,
    build_converter,
)
from gateway.mapping.errors import MappingError
from gateway.mapping.fastpath import fast_boolean, fast_concat, lookup, walk
from gateway.mapping.fhirpath import (
    CompileError,
    Evaluator,
    check_functions,
    fhirpath_evaluator,
    interpreted_evaluator,
    parse_fhirpath,
)

__all__ = ["CompileError", "Evaluator", "Expression", "Scope", "compile_expression", "split_pipeline"]

_BUILTIN_VARIABLES = frozenset({"context", "ucum", "resource", "rootResource"})


@dataclass(slots=True)
class Scope:
    """The variables an expression may use where it appears (``%name``)."""

    variables: frozenset[str]
    where: str = ""  # e.g. "lets may only use earlier lets" – appended to unknown-variable errors


@dataclass(slots=True)
class Expression:
    """A compiled expression.

    ``reads`` lists the member paths the expression reads, for coverage reports: each is
    ``(variable or None, keys)``; ``None`` means the record root.
    """

    text: str
    run: Evaluator
    constant: list[Any] | None = None
    reads: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)
    variables: set[str] = field(default_factory=set)
    fresh: bool = False  # objects in the result are newly built, not shared with the record
    static: bool = False  # the value does not depend on the record (literals, %system, …)


# --------------------------------------------------------------------------- pipeline text


def _split_top(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quotes, backticks and brackets."""
    parts: list[str] = []
    depth = 0
    quote_char: str | None = None
    start = 0
    index = 0
    while index < len(text):
        char = text[index]
        if quote_char is not None:
            if char == "\\":
                index += 1
            elif char == quote_char:
                quote_char = None
        elif char in "'\"`":
            quote_char = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    if quote_char is not None:
        raise CompileError(f"unterminated {quote_char} quote")
    if depth != 0:
        raise CompileError("unbalanced brackets")
    parts.append(text[start:])
    return parts


_CONVERTER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_NUMBER_RE = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def _parse_literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        body = text[1:-1]
        return re.sub(
            r"\\(.)", lambda match: {"n": "\n", "t": "\t"}.get(match.group(1), match.group(1)), body
        )
    if _NUMBER_RE.match(text):
        return float(text) if "." in text else int(text)
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    raise CompileError(f"converter argument {text!r} must be a quoted text, a number, true, false or null")


def split_pipeline(text: str) -> tuple[str, list[tuple[str, list[Any]]]]:
    """``"a.b | split | concept('x')"`` → ``("a.b", [("split", []), ("concept", ["x"])])``."""
    parts = _split_top(text, "|")
    source = parts[0].strip()
    if not source:
        raise CompileError("empty expression")
    steps: list[tuple[str, list[Any]]] = []
    for part in parts[1:]:
        match = _CONVERTER_RE.match(part)
        if match is None:
            raise CompileError(
                f"{part.strip()!r} after '|' is not a converter (for a FHIRPath union write a.union(b))"
            )
        name, raw_args = match.group(1), match.group(2)
        args: list[Any] = []
        if raw_args is not None and raw_args.strip():
            args = [_parse_literal(arg) for arg in _split_top(raw_args, ",")]
        steps.append((name, args))
    return source, steps


# --------------------------------------------------------------------------- compile


def _nothing(record: Any, env: dict[str, list[Any]]) -> list[Any]:
    return []


def _chain(source: Evaluator, steps: list[Converter]) -> Evaluator:
    if not steps:
        return source
    if len(steps) == 1:
        (step,) = steps
        return lambda record, env: step(source(record, env))

    def run(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        values = source(record, env)
        for step in steps:
            values = step(values)
        return values

    return run


def compile_expression(
    text: str, ctx: CompileContext, scope: Scope, *, interpret: bool = False
) -> Expression:
    """Compile ``<FHIRPath> [| converter …]``; raises ``CompileError`` with a readable reason."""
    if not isinstance(text, str):
        raise CompileError(f"expected an expression text, got {type(text).__name__}")
    source_text, steps = split_pipeline(text)
    ast = parse_fhirpath(source_text)
    check_functions(ast)
    variables = variables_of(ast)
    unknown = sorted(variables - scope.variables - _BUILTIN_VARIABLES)
    if unknown:
        hint = f" ({scope.where})" if scope.where else ""
        known = ", ".join(f"%{name}" for name in sorted(scope.variables)) or "none"
        raise CompileError(f"unknown variable %{unknown[0]}{hint}; known here: {known}")
    converters: list[Converter] = []
    for name, args in steps:
        try:
            converters.append(build_converter(name, args, ctx, source_text))
        except ConverterArgError as exc:
            raise CompileError(str(exc)) from exc
    expression = Expression(text, _nothing, reads=member_reads(ast), variables=variables)
    expression.fresh = bool(steps) and CONVERTERS[steps[-1][0]].fresh
    top = (ast.get("children") or [{}])[0]
    literal = (
        top.get("type") == "TermExpression" and (top.get("children") or [{}])[0].get("type") == "LiteralTerm"
    )
    simple = simple_path(top)
    if simple is not None and simple[0] in ctx.constants:
        literal = True  # %system and friends are known now: fold them like literals
    expression.static = literal
    if interpret:
        expression.run = _chain(interpreted_evaluator(source_text), converters)
        return expression
    if literal:
        if simple is not None and simple[0] in ctx.constants:
            values = (
                walk(list(ctx.constants[simple[0]]), simple[1])
                if simple[1]
                else list(ctx.constants[simple[0]])
            )
        else:
            values = plain(fhirpathpy.evaluate({}, source_text))
        try:
            values = _chain(lambda record, env: values, converters)({}, {})
        except MappingError as exc:
            raise CompileError(exc.message) from exc
        folded = values
        expression.constant = folded
        expression.run = lambda record, env: list(folded)
        return expression
    source: Evaluator
    if simple is not None:
        source = lookup(*simple)
    else:
        general = fhirpath_evaluator(source_text)
        source = fast_boolean(top) or fast_concat(top, general) or general
    expression.run = _chain(source, converters)
    return expression
