"""Plain-Python evaluation of the FHIRPath expressions mappings use most.

* member paths (``form.vitals.weight_kg``, ``%item.`a/b```): dict lookups, absent keys and
  nulls give nothing, lists are walked into, as FHIRPath navigation does on JSON;
* ``path = literal`` / ``!=`` with FHIRPath's empty propagation and no implicit
  conversions between types, ``.exists()``, ``.empty()``, ``.not()``, ``and``/``or``;
* text joined with ``+`` or ``&`` from string literals and paths (``'village:' + village``)
  when every path gives one text; anything else takes the fhirpathpy route it was given.

Property tests (``tests/mapping/test_expressions.py``) hold these to fhirpathpy's results.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import fhirpathpy

from gateway.fhir import identifier, only_child, plain, simple_path
from gateway.jsonio import DecimalLiteral
from gateway.mapping.fhirpath import Evaluator

__all__ = ["fast_boolean", "fast_concat", "lookup", "walk"]


def walk(items: list[Any], keys: tuple[str, ...]) -> list[Any]:
    for key in keys:
        found: list[Any] = []
        for item in items:
            if type(item) is dict:
                value = item.get(key)
                if value is None:
                    continue
                if type(value) is list:
                    found.extend(element for element in value if element is not None)
                else:
                    found.append(value)
        items = found
        if not items:
            break
    return items


def lookup(variable: str | None, keys: tuple[str, ...]) -> Evaluator:
    if variable is None and len(keys) == 1:
        (only,) = keys

        def run_one(record: Any, env: dict[str, list[Any]]) -> list[Any]:
            value = record.get(only) if type(record) is dict else None
            if value is None:
                return []
            if type(value) is list:
                return [element for element in value if element is not None]
            return [value]

        return run_one
    if variable is None:
        last = keys[-1]
        inner = keys[:-1]

        def run_record(record: Any, env: dict[str, list[Any]]) -> list[Any]:
            # Fast path: a chain of objects; lists anywhere on the way take the general walk.
            node = record
            for key in inner:
                if type(node) is not dict:
                    return walk([record], keys) if type(node) is list else []
                node = node.get(key)
            if type(node) is not dict:
                return walk([record], keys) if type(node) is list else []
            value = node.get(last)
            if value is None:
                return []
            if type(value) is list:
                return [element for element in value if element is not None]
            return [value]

        return run_record

    def run_variable(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        values = env.get(variable)
        if values is None:
            return [record] if variable == "context" else []
        return walk(values, keys) if keys else values

    return run_variable


def _same(left: Any, right: Any) -> bool:
    """FHIRPath ``=`` on two single items (no implicit conversions between types)."""
    left_num = type(left) in (int, float) or isinstance(left, Decimal | DecimalLiteral)
    right_num = type(right) in (int, float) or isinstance(right, Decimal | DecimalLiteral)
    if left_num and right_num:
        return bool(left == right)
    if type(left) is bool or type(right) is bool:
        return type(left) is type(right) and left == right
    if type(left) is str and type(right) is str:
        return left == right
    if left_num or right_num or type(left) is str or type(right) is str:
        return False
    return bool(left == right)


def fast_boolean(ast: dict[str, Any]) -> Evaluator | None:
    """A closure for simple comparisons and their and/or/not, or None if not that simple."""
    node_type = ast.get("type")
    children = ast.get("children") or []
    if (
        node_type == "EqualityExpression"
        and ast.get("terminalNodeText") in (["="], ["!="])
        and len(children) == 2
    ):
        path = simple_path(children[0])
        literal = children[1]
        if path is None or literal.get("type") != "TermExpression":
            return None
        term = (literal.get("children") or [{}])[0]
        if term.get("type") != "LiteralTerm":
            return None
        inner = (term.get("children") or [{}])[0].get("type")
        if inner not in ("StringLiteral", "NumberLiteral", "BooleanLiteral"):
            return None
        constant = plain(fhirpathpy.evaluate({}, literal["text"]))
        if len(constant) != 1:
            return None
        (expected,) = constant
        read = lookup(*path)
        negate = ast["terminalNodeText"] == ["!="]

        def compare(record: Any, env: dict[str, list[Any]]) -> list[Any]:
            values = read(record, env)
            if not values:
                return []
            equal = len(values) == 1 and _same(values[0], expected)
            return [equal != negate]

        return compare
    if node_type in ("AndExpression", "OrExpression") and len(children) == 2:
        if ast.get("terminalNodeText") not in (["and"], ["or"]):
            return None
        left, right = fast_boolean(children[0]), fast_boolean(children[1])
        if left is None or right is None:
            return None
        is_and = node_type == "AndExpression"

        def combine(record: Any, env: dict[str, list[Any]]) -> list[Any]:
            a, b = left(record, env), right(record, env)
            a_val = a[0] if a and type(a[0]) is bool else None
            b_val = b[0] if b and type(b[0]) is bool else None
            if is_and:
                if a_val is False or b_val is False:
                    return [False]
                return [True] if a_val is True and b_val is True else []
            if a_val is True or b_val is True:
                return [True]
            return [False] if a_val is False and b_val is False else []

        return combine
    if node_type == "InvocationExpression" and len(children) == 2:
        call = children[1]
        functn = only_child(call, "Functn") if call.get("type") == "FunctionInvocation" else None
        if functn is None or len(functn.get("children") or []) != 1:
            return None
        name = identifier(functn["children"][0])
        if name not in ("exists", "empty", "not"):
            return None
        if name == "not":
            operand = fast_boolean(children[0])
            if operand is None:
                return None

            def negate_fn(record: Any, env: dict[str, list[Any]]) -> list[Any]:
                values = operand(record, env)
                return [not values[0]] if len(values) == 1 and type(values[0]) is bool else []

            return negate_fn
        path = simple_path(children[0])
        if path is None:
            return None
        read = lookup(*path)
        want = name == "exists"
        return lambda record, env: [bool(read(record, env)) == want]
    if node_type == "TermExpression":
        term = (children or [{}])[0]
        if term.get("type") == "ParenthesizedTerm" and term.get("children"):
            return fast_boolean(term["children"][0])
    return None


def _concat_operands(ast: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The operands of a chain of one concatenation operator, left to right."""
    if ast.get("type") != "AdditiveExpression" or len(ast.get("children") or []) != 2:
        return None
    left, right = ast["children"]
    inner = _concat_operands(left)
    if inner is not None and left.get("terminalNodeText") != ast.get("terminalNodeText"):
        return None
    return [*(inner if inner is not None else [left]), right]


def fast_concat(ast: dict[str, Any], fallback: Evaluator) -> Evaluator | None:
    """``'a' + path + …`` (or ``&``) as plain string joins, or None if not that simple.

    ``+`` gives nothing when an operand is empty, ``&`` treats it as ``''``. An operand that
    is not exactly one text (a number, several items) goes to ``fallback`` (fhirpathpy), so
    its meaning, error included, is FHIRPath's.
    """
    operator = ast.get("terminalNodeText")
    if operator not in (["+"], ["&"]):
        return None
    operands = _concat_operands(ast)
    if operands is None:
        return None
    parts: list[str | Evaluator] = []
    for operand in operands:
        path = simple_path(operand)
        if path is not None:
            parts.append(lookup(*path))
            continue
        term = (operand.get("children") or [{}])[0] if operand.get("type") == "TermExpression" else {}
        literal = (term.get("children") or [{}])[0] if term.get("type") == "LiteralTerm" else {}
        if literal.get("type") != "StringLiteral":
            return None
        constant = plain(fhirpathpy.evaluate({}, operand["text"]))
        if len(constant) != 1 or type(constant[0]) is not str:
            return None
        parts.append(constant[0])
    empty_is_blank = operator == ["&"]

    def concat(record: Any, env: dict[str, list[Any]]) -> list[Any]:
        text: list[str] = []
        for part in parts:
            if type(part) is str:
                text.append(part)
                continue
            values = part(record, env)  # type: ignore[operator]
            if not values:
                if empty_is_blank:
                    continue
                return []
            if len(values) != 1 or type(values[0]) is not str:
                return fallback(record, env)
            text.append(values[0])
        return ["".join(text)]

    return concat
