"""Invariants compiled to plain-Python predicates, for the FHIRPath forms they use most.

fhirpathpy costs 20–100 µs an evaluation (it wraps every node and re-reads the R4 model);
most base invariants are a few ``exists()``/``empty()``/``=``/``implies`` over the
elements of one node. ``compile_predicate`` turns such an expression, typed against the
element table, into a closure over the JSON (a few µs), and refuses the rest at compile
time (``None``: fhirpathpy evaluates it, as before).

Compiled predicates answer exactly as fhirpathpy would, or not at all: whenever a value
falls outside what the compiled form was proven on (a primitive carrying ``_x``
extensions, a null in an array, a non-boolean operand of ``and``, decimals not written
as numbers, date-times with a time part, a collection where a singleton is expected…)
the predicate raises ``Unsure`` and the caller asks fhirpathpy. ``tests/fhir/test_invariant_predicates.py``
holds them to fhirpathpy's verdicts on every official R4 example and on mutated ones.

Supported: member paths (choice elements through ``as``), string/number/boolean
literals, ``%ucum``, ``$this``, ``exists()``/``exists(criteria)``, ``empty()``,
``not()``, ``count()``, ``hasValue()`` on primitives, ``where()``, ``all()``,
``trace()``, ``startsWith()``, ``=``/``!=`` on codes, strings, integers, decimals and
booleans, ``<``/``<=``/``>``/``>=`` on numbers and same-precision dates, ``in`` a list
of literals, ``|`` under ``exists()``/``empty()``, and FHIRPath's three-valued
``and``/``or``/``xor``/``implies``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import ConfigError, RequestError
from gateway.fhir.fhirpath import identifier
from gateway.fhir.strict import KIND_COMPLEX, KIND_RESOURCE, ComplexType, StrictChecker
from gateway.jsonio import DecimalLiteral

__all__ = ["Predicate", "Unsure", "compile_predicate"]

Coll = list[Any]
Fn = Callable[[Coll], Coll]
#: A predicate's answer on one node: True/False, or None for an empty result.
Predicate = Callable[[Any], "bool | None"]
# Static types: a ComplexType, a FHIR primitive type name, a System type ("String"…),
# or one of the markers below.
Static = Any
_UNKNOWN = "?"  # values of several types: only counted or tested for existence
_BOOLEAN = "Boolean"

_TEXT_TYPES = frozenset("string code id uri url canonical markdown oid uuid String".split())
_NUMBER_TYPES = frozenset("integer positiveInt unsignedInt decimal Integer Decimal".split())
_BOOL_TYPES = frozenset({"boolean", _BOOLEAN})
_DATE_TYPES = frozenset({"date", "dateTime", "instant"})
_UCUM = "http://unitsofmeasure.org"


class Unsure(RequestError):
    """The compiled form cannot answer as fhirpathpy would for this value: ask fhirpathpy."""

    def __init__(self, diagnostics: str = "the compiled form cannot decide: ask fhirpathpy") -> None:
        super().__init__(diagnostics)


class _Unsupported(ConfigError):
    """The expression uses a form this module does not compile."""

    def __init__(self, form: Any) -> None:
        super().__init__(f"not compiled: {form}")


def compile_predicate(checker: StrictChecker, ctype: ComplexType, node: dict[str, Any]) -> Predicate | None:
    """A predicate equivalent to ``node`` evaluated on a node of type ``ctype``, or None."""
    try:
        fn, _ = _Compiler(checker).expression(node, ctype)
    except _Unsupported:
        return None

    def predicate(data: Any) -> bool | None:
        result = fn([data])
        if not result:
            return None
        if len(result) == 1 and type(result[0]) is bool:
            return bool(result[0])
        raise Unsure

    return predicate


def _singleton_bool(values: Coll) -> bool | None:
    if not values:
        return None
    if len(values) == 1 and type(values[0]) is bool:
        return bool(values[0])
    raise Unsure


def _number(value: Any) -> Decimal:
    vtype = type(value)
    if vtype is int:
        return Decimal(value)
    if vtype is float:
        return Decimal(repr(value))  # the decimal the JSON spelled (orjson keeps the shortest form)
    if vtype is Decimal:
        return value  # type: ignore[no-any-return]
    if vtype is DecimalLiteral:
        return Decimal(value.text)  # the literal the client wrote (5.40 keeps its precision)
    raise Unsure


def _text(value: Any) -> str:
    if type(value) is not str:
        raise Unsure
    return value


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise Unsure
    return value


def _class_of(static: Static) -> str | None:
    if not isinstance(static, str):
        return None
    if static in _TEXT_TYPES:
        return "text"
    if static in _NUMBER_TYPES:
        return "number"
    if static in _BOOL_TYPES:
        return "bool"
    if static in _DATE_TYPES:
        return "date"
    return None


_NORMALISE: dict[str, Callable[[Any], Any]] = {"text": _text, "number": _number, "bool": _boolean}


class _Compiler:
    def __init__(self, checker: StrictChecker) -> None:
        self._checker = checker

    # -- expressions --------------------------------------------------------------------

    def expression(self, node: dict[str, Any], focus: Static) -> tuple[Fn, Static]:
        kind = node.get("type")
        children = node.get("children") or []
        if kind == "TermExpression":
            return self.term(children[0], focus)
        if kind == "InvocationExpression":
            base, base_type = self.expression(children[0], focus)
            return self.invocation(children[1], base, base_type)
        if kind in ("AndExpression", "OrExpression", "ImpliesExpression"):
            return self.logic(node["terminalNodeText"][0], children, focus), _BOOLEAN
        if kind == "EqualityExpression":
            return self.equality(node["terminalNodeText"][0], children, focus), _BOOLEAN
        if kind == "InequalityExpression":
            return self.inequality(node["terminalNodeText"][0], children, focus), _BOOLEAN
        if kind == "MembershipExpression" and node["terminalNodeText"][0] == "in":
            return self.membership(children, focus), _BOOLEAN
        if kind == "UnionExpression":
            left, _ = self.expression(children[0], focus)
            right, _ = self.expression(children[1], focus)
            # Only existence is asked of a union (see ``invocation``): no need to de-duplicate.
            return (lambda c: left(c) + right(c)), ("union",)
        if kind == "TypeExpression" and node["terminalNodeText"][0] == "as":
            return self.cast(children, focus)
        raise _Unsupported(kind)

    def term(self, term: dict[str, Any], focus: Static) -> tuple[Fn, Static]:
        kind = term.get("type")
        children = term.get("children") or []
        if kind == "ParenthesizedTerm":
            return self.expression(children[0], focus)
        if kind == "LiteralTerm":
            value, static = _literal(children[0])
            constant = [value]
            return (lambda c: constant), static
        if kind == "ExternalConstantTerm":
            constant_node = children[0]
            ident = (constant_node.get("children") or [{}])[0]
            if ident.get("type") == "Identifier" and identifier(ident) == "ucum":
                return (lambda c: [_UCUM]), "String"
            raise _Unsupported("variable")
        if kind == "InvocationTerm":
            inner = children[0]
            if inner.get("type") == "ThisInvocation":
                return (lambda c: c), focus
            return self.invocation(inner, lambda c: c, focus)
        raise _Unsupported(kind)

    # -- navigation and functions ----------------------------------------------------------

    def invocation(self, invocation: dict[str, Any], base: Fn, static: Static) -> tuple[Fn, Static]:
        kind = invocation.get("type")
        if kind == "MemberInvocation":
            return self.member(identifier(invocation["children"][0]), base, static)
        if kind != "FunctionInvocation":
            raise _Unsupported(kind)
        function = invocation["children"][0]
        name = identifier(function["children"][0])
        params = function["children"][1]["children"] if len(function.get("children") or []) > 1 else []
        if isinstance(static, tuple) and (name not in ("exists", "empty") or params):
            raise _Unsupported("only existence is asked of a union")
        return self.function(name, params, base, static)

    def member(self, name: str, base: Fn, static: Static) -> tuple[Fn, Static]:
        if not isinstance(static, ComplexType):
            raise _Unsupported("member of a primitive or unknown type")
        prop = static.props.get(name)
        if prop is None:
            if name in static.choices:
                variants = tuple(key for key, spec in static.props.items() if spec[3] == name)
                return _choice(base, variants), _UNKNOWN
            raise _Unsupported("unknown member")
        kind, arg, is_array, _, type_name = prop
        if kind == KIND_RESOURCE:
            raise _Unsupported("resource member")
        result: Static = arg if kind == KIND_COMPLEX else type_name
        return _navigate(base, name, is_array, kind != KIND_COMPLEX), result

    def function(self, name: str, params: list[dict[str, Any]], base: Fn, static: Static) -> tuple[Fn, Static]:
        if name == "trace" and len(params) <= 1:
            return base, static
        if name in ("exists", "where", "all") and len(params) == 1:
            criteria = self.criteria(params[0], static)
            if name == "where":
                return _where(base, criteria), static
            if name == "exists":
                where = _where(base, criteria)
                return (lambda c: [bool(where(c))]), _BOOLEAN
            return _all(base, criteria), _BOOLEAN
        if params:
            if name == "startsWith" and len(params) == 1 and _class_of(static) == "text":
                prefix, prefix_type = _literal_param(params[0])
                if prefix_type != "String":
                    raise _Unsupported("startsWith argument")
                return _starts_with(base, prefix), _BOOLEAN
            raise _Unsupported(name)
        if name == "exists":
            return (lambda c: [bool(base(c))]), _BOOLEAN
        if name == "empty":
            return (lambda c: [not base(c)]), _BOOLEAN
        if name == "count":
            return (lambda c: [len(base(c))]), "Integer"
        if name == "not":
            return _not(base), _BOOLEAN
        if name == "hasValue" and _class_of(static) is not None:
            # Primitives navigated here always carry a value (an ``_x`` makes ``_navigate`` unsure).
            return (lambda c: [len(base(c)) == 1]), _BOOLEAN
        raise _Unsupported(name)

    def criteria(self, node: dict[str, Any], static: Static) -> Fn:
        if isinstance(static, tuple) or static == _UNKNOWN:
            raise _Unsupported("criteria over values of unknown type")
        fn, _ = self.expression(node, static)
        return fn

    def cast(self, children: list[dict[str, Any]], focus: Static) -> tuple[Fn, Static]:
        # ``probability as decimal``: the one variant of a choice element, typed.
        path, type_name = children[0], _type_name(children[1])
        term = (path.get("children") or [{}])[0] if path.get("type") == "TermExpression" else {}
        member = (term.get("children") or [{}])[0] if term.get("type") == "InvocationTerm" else {}
        if member.get("type") != "MemberInvocation" or not isinstance(focus, ComplexType):
            raise _Unsupported("as on anything but a choice element")
        name = identifier(member["children"][0])
        if name not in focus.choices:
            raise _Unsupported("as on anything but a choice element")
        variant = name + type_name[:1].upper() + type_name[1:]
        prop = focus.props.get(variant)
        if prop is None or prop[3] != name or prop[4] != type_name:
            raise _Unsupported("no such variant")
        variants = tuple(key for key, spec in focus.props.items() if spec[3] == name)
        found = _choice(lambda c: c, variants)
        return _only_variant(found, variant, prop[2]), type_name

    # -- operators ------------------------------------------------------------------------

    def logic(self, operator: str, children: list[dict[str, Any]], focus: Static) -> Fn:
        left, _ = self.expression(children[0], focus)
        right, _ = self.expression(children[1], focus)
        combine = _LOGIC.get(operator)
        if combine is None:
            raise _Unsupported(operator)

        def run(c: Coll) -> Coll:
            result = combine(_singleton_bool(left(c)), _singleton_bool(right(c)))
            return [] if result is None else [result]

        return run

    def operands(self, children: list[dict[str, Any]], focus: Static) -> tuple[Fn, Fn, str]:
        left, left_type = self.expression(children[0], focus)
        right, right_type = self.expression(children[1], focus)
        left_class, right_class = _class_of(left_type), _class_of(right_type)
        if left_class is None or left_class != right_class:
            raise _Unsupported("operands of different or unknown types")
        return left, right, left_class

    def equality(self, operator: str, children: list[dict[str, Any]], focus: Static) -> Fn:
        if operator not in ("=", "!="):
            raise _Unsupported(operator)
        left, right, value_class = self.operands(children, focus)
        if value_class == "date":
            raise _Unsupported("date equality")
        normalise = _NORMALISE[value_class]
        negate = operator == "!="

        def run(c: Coll) -> Coll:
            a, b = left(c), right(c)
            if not a or not b:
                return []
            if len(a) != len(b):
                return [negate]
            if len(a) > 1:
                raise Unsure  # fhirpathpy compares first items only
            return [(normalise(a[0]) == normalise(b[0])) is not negate]

        return run

    def inequality(self, operator: str, children: list[dict[str, Any]], focus: Static) -> Fn:
        left, right, value_class = self.operands(children, focus)
        if value_class not in ("number", "date"):
            raise _Unsupported("ordering of these types")
        compare = _ORDER[operator]

        def run(c: Coll) -> Coll:
            a, b = left(c), right(c)
            if not a or not b:
                return []
            if len(a) > 1 or len(b) > 1:
                raise Unsure
            if value_class == "number":
                return [compare(_number(a[0]), _number(b[0]))]
            first, second = _text(a[0]), _text(b[0])
            # Dates and date-times of one precision in one time zone order as strings;
            # the rest (precisions or zones that differ) is fhirpathpy's.
            if len(first) != len(second) or _zone(first) != _zone(second):
                raise Unsure
            return [compare(first, second)]

        return run

    def membership(self, children: list[dict[str, Any]], focus: Static) -> Fn:
        left, left_type = self.expression(children[0], focus)
        if _class_of(left_type) != "text":
            raise _Unsupported("in over non-text values")
        options = tuple(_literal_set(children[1]))

        def run(c: Coll) -> Coll:
            a = left(c)
            if not a:
                return []
            if len(a) > 1:
                raise Unsure
            return [_text(a[0]) in options]

        return run


# -- runtime pieces ----------------------------------------------------------------------


def _navigate(base: Fn, name: str, is_array: bool, primitive: bool) -> Fn:
    extension = "_" + name

    def run(c: Coll) -> Coll:
        out: Coll = []
        for item in base(c):
            if type(item) is not dict:
                raise Unsure
            if primitive and extension in item:
                raise Unsure  # a primitive with extensions (maybe without a value)
            value = item.get(name)
            if value is None:
                continue
            if is_array:
                if type(value) is not list or None in value:
                    raise Unsure
                out.extend(value)
            else:
                out.append(value)
        return out

    return run


def _choice(base: Fn, variants: tuple[str, ...]) -> Fn:
    def run(c: Coll) -> Coll:
        out: Coll = []
        for item in base(c):
            if type(item) is not dict:
                raise Unsure
            for key in variants:
                if key in item or "_" + key in item:
                    value = item.get(key)
                    if value is None or type(value) is list or "_" + key in item:
                        raise Unsure
                    out.append((key, value))
        return out

    return run


def _only_variant(found: Fn, variant: str, is_array: bool) -> Fn:
    if is_array:
        raise _Unsupported("repeating choice")

    def run(c: Coll) -> Coll:
        return [value for key, value in found(c) if key == variant]

    return run


def _zone(value: str) -> str:
    """The time-zone suffix of a date-time ("Z", "+01:00"; "" without a time or zone)."""
    time = value.find("T")
    if time < 0:
        return ""
    for index in range(time, len(value)):
        if value[index] in "Z+-":
            return value[index:]
    return ""


def _where(base: Fn, criteria: Fn) -> Fn:
    def run(c: Coll) -> Coll:
        return [item for item in base(c) if _singleton_bool(criteria([item])) is True]

    return run


def _all(base: Fn, criteria: Fn) -> Fn:
    def run(c: Coll) -> Coll:
        for item in base(c):
            if _singleton_bool(criteria([item])) is not True:
                return [False]
        return [True]

    return run


def _not(base: Fn) -> Fn:
    def run(c: Coll) -> Coll:
        value = base(c)
        if not value:
            return []
        if len(value) > 1:
            raise Unsure
        return [not _boolean(value[0])]

    return run


def _starts_with(base: Fn, prefix: str) -> Fn:
    def run(c: Coll) -> Coll:
        value = base(c)
        if not value:
            return []
        if len(value) > 1:
            raise Unsure
        return [_text(value[0]).startswith(prefix)]

    return run


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _xor(a: bool | None, b: bool | None) -> bool | None:
    return None if a is None or b is None else a is not b


def _implies(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is True:
        return True
    return None if a is None or b is None else False


_LOGIC: dict[str, Callable[[bool | None, bool | None], bool | None]] = {
    "and": _and, "or": _or, "xor": _xor, "implies": _implies,
}  # fmt: skip
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}  # fmt: skip


# -- literals ----------------------------------------------------------------------------


def _literal(node: dict[str, Any]) -> tuple[Any, Static]:
    kind = node.get("type")
    text = node["terminalNodeText"][0] if node.get("terminalNodeText") else node.get("text", "")
    if kind == "StringLiteral":
        if "\\" in text:
            raise _Unsupported("escapes")
        return text[1:-1], "String"
    if kind == "BooleanLiteral":
        return text == "true", _BOOLEAN
    if kind == "NumberLiteral":
        try:
            return (Decimal(text), "Decimal") if "." in text else (int(text), "Integer")
        except (InvalidOperation, ValueError) as exc:
            raise _Unsupported("number") from exc
    raise _Unsupported(kind)


def _literal_param(node: dict[str, Any]) -> tuple[Any, Static]:
    term = (node.get("children") or [{}])[0] if node.get("type") == "TermExpression" else {}
    if term.get("type") != "LiteralTerm":
        raise _Unsupported("argument is not a literal")
    return _literal(term["children"][0])


def _literal_set(node: dict[str, Any]) -> list[str]:
    kind = node.get("type")
    children = node.get("children") or []
    if kind == "UnionExpression":
        return _literal_set(children[0]) + _literal_set(children[1])
    if kind == "TermExpression" and children and children[0].get("type") == "ParenthesizedTerm":
        return _literal_set(children[0]["children"][0])
    value, static = _literal_param(node)
    if static != "String":
        raise _Unsupported("non-text literal in a set")
    return [value]


def _type_name(node: dict[str, Any]) -> str:
    names = [identifier(n) for n in _identifiers(node)]
    if not names or (len(names) == 2 and names[0] != "FHIR") or len(names) > 2:
        raise _Unsupported("qualified type")
    return names[-1]


def _identifiers(node: dict[str, Any]) -> list[dict[str, Any]]:
    if node.get("type") == "Identifier":
        return [node]
    return [found for child in node.get("children") or [] for found in _identifiers(child)]
