"""Strict FHIR R4 JSON checking, where the fhir.resources models are lax.

The R4B models accept ``"active": "true"``, ``"active": null``, ``"name": []`` and
``"gender": "dog"``; FHIR JSON (json.html, datatypes.html) forbids all four. ``check_strict``
walks a parsed resource once and reports every such problem as a ``StrictIssue``:

=====================  ==============================================================
``structure``          wrong JSON type, ``null``, empty array or object, array where one
                       value is required (and the reverse), unknown property (including
                       a wrong choice-type suffix), two types of one choice element,
                       a malformed ``_x`` primitive extension
``value``              a primitive in the wrong format (id, date, dateTime, instant,
                       time, code, uri, oid, uuid, base64Binary), an integer out of
                       range, an empty string, a control character in a string
``code-invalid``       a code outside a REQUIRED binding
``required``           a missing mandatory complex element (e.g. ``Observation.code``)
=====================  ==============================================================

It is driven by ``gateway/r4/data/r4-elements.json``, generated from the official R4 JSON schema by
``scripts/gen_r4_elements.py``. Deliberate departures from that schema, each because the
schema is narrower than the FHIR JSON rules:

* ``_x`` is allowed on every primitive element except ``id`` (the schema omits it for
  ``canonical``), and ``null`` may stand in a primitive array where the paired ``_x``
  array holds an extension (json.html#primitive);
* patterns use the FHIR (XML-Schema) meaning of ``\\s``, i.e. only space, tab, CR and LF;
* a value with a pattern (uri, canonical, code, …) may hold no control character either, as
  a string may not (datatypes.html#string: these types are strings).

Usage::

    issues = check_strict(json.loads(body))
    if issues:
        ...  # 400 with an OperationOutcome built from the issues
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from gateway.fhir.narrative import narrative_problem
from gateway.jsonio import DecimalLiteral
from gateway.r4 import load_table

__all__ = [
    "KIND_COMPLEX",
    "KIND_RESOURCE",
    "StrictIssue",
    "StrictChecker",
    "check_strict",
    "default_checker",
]

_DATA_FILE = "r4-elements.json"
_BINDINGS_FILE = "r4-bindings.json"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# Non-empty, and no control character below U+0020 except tab, LF and CR (datatypes.html#string).
_TEXT = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f]+\Z")
#: A lookahead holding a whole value to the same rule, put before a primitive's own pattern.
_NO_CONTROLS = r"(?=[^\x00-\x08\x0b\x0c\x0e-\x1f]*\Z)"
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ENUM_SHOWN = 12

# Property kinds (small ints: the hot loop compares them, so no Enum attribute lookups).
_COMPLEX, _RESOURCE, _STRING, _BOOL, _DECIMAL, _INT, _DATE, _BASE64_KIND, _XHTML, _ENUM = range(10)
_PRIMITIVE_KINDS = frozenset({_STRING, _BOOL, _DECIMAL, _INT, _DATE, _BASE64_KIND, _ENUM})
#: Kinds of a property that are not primitives (for walks outside this module, see ``shapes``).
KIND_COMPLEX, KIND_RESOURCE = _COMPLEX, _RESOURCE


@dataclass(frozen=True, slots=True)
class StrictIssue:
    """One problem: where (FHIRPath-like), the FHIR issue-type code, and a message without values."""

    expression: str
    code: str
    diagnostics: str


class ComplexType:
    """A compiled complex type: its properties, mandatory elements and choice groups."""

    __slots__ = ("name", "props", "required", "choices", "is_resource")

    def __init__(self, name: str, is_resource: bool) -> None:
        self.name = name
        self.is_resource = is_resource
        # property -> (kind, argument, is_array, choice prefix or "", primitive type name)
        self.props: dict[str, tuple[int, Any, bool, str, str]] = {}
        self.required: tuple[str, ...] = ()
        self.choices: tuple[str, ...] = ()

    def choice_of(self, key: str) -> str | None:
        """The choice element ``key`` is a typed name of (``deceasedBoolean`` → ``deceased``), else None."""
        prop = self.props.get(key)
        return prop[3] or None if prop is not None else None


class StrictChecker:
    """Checks parsed FHIR R4 JSON against an element table (see ``gateway/r4/data/r4-elements.json``)."""

    def __init__(
        self, table: dict[str, Any], bindings: dict[str, Any] | None = None, *, narrative: bool = False
    ) -> None:
        """Compile ``table``; ``bindings`` (``r4-bindings.json``) replace the schema's code lists.

        Without ``bindings`` the schema's enums are the required bindings (the checker
        before issue 12); ``narrative`` parses every ``xhtml`` value (``gateway.fhir.narrative``).
        """
        resource_names = set(table["resources"])
        self._types = {name: ComplexType(name, name in resource_names) for name in table["types"]}
        self.resource_types = frozenset(resource_names)
        self.narrative = narrative
        enums = [frozenset(values) for values in table["enums"]]
        self._enum_text = {id(values): _enum_text(values) for values in enums}
        value_sets = {url: frozenset(codes) for url, codes in (bindings or {}).get("valueSets", {}).items()}
        self._enum_text.update({id(codes): f"{url}: {_enum_text(codes)}" for url, codes in value_sets.items()})
        bound: dict[str, dict[str, str]] = (bindings or {}).get("elements", {})
        primitives = {name: self._compile_primitive(kind, regex) for name, (kind, regex) in table["primitives"].items()}
        for name, entry in table["types"].items():
            compiled = self._types[name]
            choices = entry.get("c", [])
            compiled.required = tuple(entry.get("r", ()))
            compiled.choices = tuple(choices)
            bound_here = bound.get(name, {})
            for prop, spec in entry["p"].items():
                arg: Any
                is_array = spec.endswith("[]")
                target = spec[:-2] if is_array else spec
                choice = next((c for c in choices if prop.startswith(c) and prop[len(c)].isupper()), "")
                if bindings is not None and target.startswith("#"):
                    # The definitions decide: Expression.language's binding is extensible in 4.0.1.
                    target = "code"
                if prop in bound_here:
                    kind, arg, type_name = _ENUM, value_sets[bound_here[prop]], "code"
                elif target.startswith("#"):
                    kind, arg, type_name = _ENUM, enums[int(target[1:])], "code"
                elif target == "Resource":
                    kind, arg, type_name = _RESOURCE, None, target
                elif target in primitives:
                    (kind, arg), type_name = primitives[target], target
                else:
                    kind, arg, type_name = _COMPLEX, self._types[target], target
                compiled.props[prop] = (kind, arg, is_array, choice, type_name)
        self._element = self._types["Element"]
        self._value_checks: dict[tuple[int, int], Callable[[Any], bool]] = {}

    def _compile_primitive(self, kind: str, regex: str | None) -> tuple[int, Any]:
        if kind == "string":
            # Every string-based primitive (uri, url, canonical, code, …) is a string: the schema's
            # pattern and, as for string, no control character (``\S`` lets a NUL through, which
            # PostgreSQL's text cannot hold and XML cannot carry).
            return _STRING, re.compile(_NO_CONTROLS + f"(?:{regex})") if regex else _TEXT
        if kind == "date":
            return _DATE, re.compile(regex or ".*")
        if kind in ("integer", "positiveInt", "unsignedInt"):
            low = {"integer": _INT_MIN, "positiveInt": 1, "unsignedInt": 0}[kind]
            return _INT, (low, _INT_MAX)
        if kind == "xhtml":
            return _XHTML, narrative_problem if self.narrative else None
        simple = {"boolean": _BOOL, "decimal": _DECIMAL, "base64": _BASE64_KIND}
        return simple[kind], None

    def type_named(self, name: str) -> ComplexType:
        """The compiled complex type or resource ``name`` (KeyError if there is none)."""
        return self._types[name]

    def resource_type(self, name: Any) -> ComplexType | None:
        """The compiled resource type ``name``, or None when ``name`` names none."""
        return self._types[name] if isinstance(name, str) and name in self.resource_types else None

    @property
    def element_type(self) -> ComplexType:
        """``Element``: the type of a primitive's ``_x`` extension object."""
        return self._element

    def value_check(self, kind: int, arg: Any) -> Callable[[Any], bool]:
        """A function telling whether one primitive value of ``(kind, arg)`` is clean.

        The same test as the walk applies (``_primitive_ok``), specialised once so that
        ``shapes`` can re-check the values of a resource whose structure is known.
        """
        key = (kind, id(arg))
        found = self._value_checks.get(key)
        if found is None:
            found = self._value_checks[key] = _specialised_check(kind, arg)
        return found

    def check(self, resource: Any) -> list[StrictIssue]:
        """Return every strictness problem of one resource (empty when it is clean)."""
        issues: list[StrictIssue] = []
        self._resource(resource, "", issues)
        return issues

    # -- walking ----------------------------------------------------------------------

    def _resource(self, value: Any, path: str, issues: list[StrictIssue]) -> None:
        if type(value) is not dict:
            issues.append(StrictIssue(path or "$", "structure", "expected a resource (a JSON object)"))
            return
        rtype = value.get("resourceType")
        if type(rtype) is not str or rtype not in self.resource_types:
            what = "missing resourceType" if rtype is None else "unknown resourceType"
            issues.append(StrictIssue(f"{path}.resourceType" if path else "resourceType", "structure", what))
            return
        # A resource inside another (a Bundle entry's, a contained one): FHIRPath filters it by type.
        self._object(value, self._types[rtype], f"{path}.ofType({rtype})" if path else rtype, issues)

    def _object(self, obj: dict[str, Any], rtype: ComplexType, path: str, issues: list[StrictIssue]) -> None:
        if not obj:
            issues.append(StrictIssue(path, "structure", "empty object"))
            return
        props = rtype.props
        seen_choice: dict[str, str] | None = None
        for key, value in obj.items():
            prop = props.get(key)
            if prop is None:
                self._other_key(obj, rtype, key, value, path, issues)
                continue
            kind, arg, is_array, choice, _ = prop
            if choice:
                if seen_choice is None:
                    seen_choice = {}
                other = seen_choice.setdefault(choice, key)
                if other != key:
                    issues.append(StrictIssue(f"{path}.{key}", "structure", f"{choice}[x] is already given as {other}"))
            if value is None:
                issues.append(StrictIssue(f"{path}.{key}", "structure", "null is not allowed"))
                continue
            if is_array:
                if type(value) is not list:
                    issues.append(StrictIssue(f"{path}.{key}", "structure", "expected an array"))
                elif not value:
                    issues.append(StrictIssue(f"{path}.{key}", "structure", "empty arrays are not allowed"))
                else:
                    self._array(obj, key, value, prop, path, issues)
                continue
            if kind == _COMPLEX:
                if type(value) is dict:
                    self._object(value, arg, f"{path}.{key}", issues)
                else:
                    issues.append(StrictIssue(f"{path}.{key}", "structure", _expected_object(value)))
            elif kind == _STRING:
                if type(value) is not str or not value or not arg.match(value):
                    issues.append(self._primitive_issue(f"{path}.{key}", value, prop))
            elif kind == _RESOURCE:
                self._resource(value, f"{path}.{key}", issues)
            elif not self._primitive_ok(value, kind, arg):
                issues.append(self._primitive_issue(f"{path}.{key}", value, prop))
        for name in rtype.required:
            if name not in obj:
                issues.append(StrictIssue(f"{path}.{name}", "required", "missing mandatory element"))

    def _array(
        self,
        obj: dict[str, Any],
        key: str,
        items: list[Any],
        prop: tuple[int, Any, bool, str, str],
        path: str,
        issues: list[StrictIssue],
    ) -> None:
        kind, arg = prop[0], prop[1]
        if kind == _COMPLEX:
            for index, item in enumerate(items):
                if type(item) is dict:
                    self._object(item, arg, f"{path}.{key}[{index}]", issues)
                else:
                    issues.append(StrictIssue(f"{path}.{key}[{index}]", "structure", _expected_object(item)))
            return
        if kind == _RESOURCE:
            for index, item in enumerate(items):
                self._resource(item, f"{path}.{key}[{index}]", issues)
            return
        extensions = obj.get("_" + key)
        for index, item in enumerate(items):
            if item is None:
                # json.html: null keeps primitive and extension arrays aligned; a null needs
                # an extension at the same position.
                if not (type(extensions) is list and index < len(extensions) and extensions[index]):
                    issues.append(StrictIssue(f"{path}.{key}[{index}]", "structure", "null is not allowed"))
            elif not self._primitive_ok(item, kind, arg):
                issues.append(self._primitive_issue(f"{path}.{key}[{index}]", item, prop))

    def _other_key(
        self, obj: dict[str, Any], rtype: ComplexType, key: str, value: Any, path: str, issues: list[StrictIssue]
    ) -> None:
        if key == "resourceType" and rtype.is_resource:
            return  # dispatch already matched it to this type
        if key.startswith("_"):
            base = rtype.props.get(key[1:])
            if base is not None and base[0] in _PRIMITIVE_KINDS and key != "_id":
                self._primitive_extension(obj, key, value, base[2], path, issues)
                return
        if any(key.startswith(c) and key[len(c) : len(c) + 1].isupper() for c in rtype.choices):
            issues.append(StrictIssue(f"{path}.{key}", "structure", "unknown type for a choice element"))
        else:
            issues.append(StrictIssue(f"{path}.{key}", "structure", f"unknown property of {rtype.name}"))

    def _primitive_extension(
        self, obj: dict[str, Any], key: str, value: Any, is_array: bool, path: str, issues: list[StrictIssue]
    ) -> None:
        where = f"{path}.{key}"
        if value is None:
            issues.append(StrictIssue(where, "structure", "null is not allowed"))
            return
        if not is_array:
            if type(value) is dict:
                self._object(value, self._element, where, issues)
            else:
                issues.append(StrictIssue(where, "structure", _expected_object(value)))
            return
        if type(value) is not list:
            issues.append(StrictIssue(where, "structure", "expected an array"))
            return
        if not value:
            issues.append(StrictIssue(where, "structure", "empty arrays are not allowed"))
            return
        values = obj.get(key[1:])
        if type(values) is list and len(values) != len(value):
            issues.append(StrictIssue(where, "structure", f"must have as many items as {key[1:]}"))
        for index, item in enumerate(value):
            if item is None:
                if not (type(values) is list and index < len(values) and values[index] is not None):
                    issues.append(StrictIssue(f"{where}[{index}]", "structure", "null is not allowed"))
            elif type(item) is dict:
                self._object(item, self._element, f"{where}[{index}]", issues)
            else:
                issues.append(StrictIssue(f"{where}[{index}]", "structure", _expected_object(item)))

    # -- primitives -------------------------------------------------------------------

    @staticmethod
    def _primitive_ok(value: Any, kind: int, arg: Any) -> bool:
        vtype = type(value)
        if kind == _STRING:
            return vtype is str and value != "" and arg.match(value) is not None
        if kind == _ENUM:
            return vtype is str and value in arg
        if kind == _BOOL:
            return vtype is bool
        if kind == _DATE:
            return vtype is str and arg.match(value) is not None and _valid_day(value)
        if kind == _INT:
            return vtype is int and arg[0] <= value <= arg[1]
        if kind == _DECIMAL:
            if vtype is int:
                return True
            if vtype is float or vtype is DecimalLiteral:
                return math.isfinite(value)
            return vtype is Decimal and value.is_finite()
        if kind == _BASE64_KIND:
            if vtype is not str or not value:
                return False
            return _BASE64.match(value if value.isalnum() else "".join(value.split())) is not None
        if kind == _XHTML:
            return vtype is str and value != "" and (arg is None or arg(value) is None)
        return False  # _RESOURCE / _COMPLEX are not primitives

    def _primitive_issue(self, where: str, value: Any, prop: tuple[int, Any, bool, str, str]) -> StrictIssue:
        kind, arg, _, _, type_name = prop
        if type(value) in (dict, list):
            return StrictIssue(where, "structure", f"expected a single {type_name} value, got an array or object")
        json_types: dict[int, tuple[type, ...]] = {
            _BOOL: (bool,),
            _DECIMAL: (int, float, Decimal),
            _INT: (int,),
        }
        json_type = json_types.get(kind, (str,))
        if not isinstance(value, json_type) or (json_type != (bool,) and type(value) is bool):
            wanted = {_BOOL: "a JSON boolean", _DECIMAL: "a JSON number", _INT: "a JSON integer"}
            return StrictIssue(where, "structure", f"{type_name} must be {wanted.get(kind, 'a JSON string')}")
        if kind == _ENUM:
            return StrictIssue(
                where, "code-invalid", f"code is not in the required value set ({self._enum_text[id(arg)]})"
            )
        if kind == _XHTML and value and arg is not None:
            return StrictIssue(where, "value", arg(value) or "not a valid narrative")
        if kind == _INT:
            return StrictIssue(where, "value", f"{type_name} out of range {arg[0]}..{arg[1]}")
        if value == "":
            return StrictIssue(where, "value", "empty strings are not allowed")
        return StrictIssue(where, "value", f"not a valid {type_name}")


def _specialised_check(kind: int, arg: Any) -> Callable[[Any], bool]:
    if kind == _STRING:
        match = arg.match
        return lambda value: type(value) is str and value != "" and match(value) is not None
    if kind == _ENUM:
        return lambda value: type(value) is str and value in arg
    if kind == _BOOL:
        return lambda value: type(value) is bool
    if kind == _INT:
        low, high = arg
        return lambda value: type(value) is int and low <= value <= high
    return lambda value: StrictChecker._primitive_ok(value, kind, arg)


def _valid_day(value: str) -> bool:
    # The schema patterns accept 31 in every month; FHIR says "dates SHALL be valid dates".
    if len(value) < 10 or value[8:10] <= "28":
        return True
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS[month]


def _enum_text(values: frozenset[str]) -> str:
    shown = ", ".join(sorted(values)[:_ENUM_SHOWN])
    return shown + ", …" if len(values) > _ENUM_SHOWN else shown


def _expected_object(value: Any) -> str:
    return "expected an object, got an array" if type(value) is list else "expected an object"


@cache
def default_checker() -> StrictChecker:
    """The checker for FHIR R4: element table, required bindings of the definitions, narratives."""
    return StrictChecker(load_table(_DATA_FILE), load_table(_BINDINGS_FILE), narrative=True)


def check_strict(resource: dict[str, Any]) -> list[StrictIssue]:
    """Return the FHIR JSON strictness problems of ``resource`` (empty list: clean)."""
    return default_checker().check(resource)
