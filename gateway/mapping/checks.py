"""Static checks of a compiled mapping, run at load time before any record flows.

The compiler (``loader.py``) already refuses bad YAML, FHIRPath, converter names and
unknown ConceptMaps. These checks look at what the compiler cannot know from syntax alone:

* **field paths** against the *input schema* inferred from the set's golden inputs
  (``<set>/tests/*.input.json|csv``) that the mapping matches: a path no golden input has,
  below an object that does exist, is a typo until proven otherwise ("did you mean");
* **converters** against the field's values in those inputs (``epoch_ms`` on a date text);
* **produced values** against the FHIR R4 element they land in: constant codes against the
  required binding (``gender: f``), constants against the primitive type's pattern,
  References against the element's allowed target types, and ``unit`` against UCUM.

Each problem is a ``(node path, message)`` pair; the loader turns it into file:line.
Nothing here runs per record: the checks cost load time only.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from gateway.fhir import simple_path, walk_ast
from gateway.jsonio import DecimalLiteral
from gateway.mapping.converters import CompileContext, ConverterArgError, build_converter
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.expressions import CompileError, Expression, split_pipeline
from gateway.mapping.fhirpath import parse_fhirpath
from gateway.mapping.inputs import InputError, read_records
from gateway.mapping.inputschema import InputSchema
from gateway.mapping.spec import MappingSpec, ObservationRule, ReferralRule, ResourceRule
from gateway.mapping.yamlfile import NodePath
from gateway.r4 import load_table

__all__ = ["InputSchema", "check_mapping", "golden_records", "ucum_problem"]

Issue = tuple[NodePath, str]
#: Converters whose input type can be tried on sample values (table and id converters
#: accept any text; their problems are unknown codes, which golden tests report).
_TYPED = frozenset(
    {"integer", "decimal", "multiply", "boolean", "date", "datetime", "epoch_ms", "epoch_s", "position"}
)
_UCUM = "http://unitsofmeasure.org"
#: The Quantity types whose ``code`` is a UCUM unit when their ``system`` says so.
_QUANTITIES = frozenset({"Quantity", "SimpleQuantity", "Age", "Duration", "Distance", "Count", "MoneyQuantity"})
_STEP = r"(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
_SIMPLE_SOURCE = re.compile(rf"^(%[a-z][a-z0-9_]*\.)?{_STEP}(\.{_STEP})*$")
_VARIABLE_ONLY = re.compile(r"^\s*\{\{\s*%([a-z][a-z0-9_]*)\s*\}\}\s*$")
_REF_LET = re.compile(r"\|\s*ref\(\s*'([A-Z][A-Za-z]+)'\s*\)\s*\}\}\s*$")
_UCUM = "http://unitsofmeasure.org"
_GOLDEN = "the golden inputs"
#: The question types (``forms.KINDS``) each typed converter takes; others are refused. A
#: text question may carry a date (CHT ``inputs``, values copied from a case): dates pass.
_FITS = {
    "integer": {"integer"},
    "decimal": {"integer", "decimal"},
    "multiply": {"integer", "decimal"},
    "boolean": {"boolean"},
    "date": {"date", "datetime", "text"},
    "datetime": {"date", "datetime", "text"},
    "epoch_ms": {"integer", "decimal"},
    "epoch_s": {"integer", "decimal"},
    "position": {"geopoint"},
}
_KIND_NAMES = {
    "text": "a text", "geopoint": "a geopoint", "binary": "a file (image, audio …)", "time": "a time",
    "integer": "an integer", "decimal": "a decimal", "date": "a date", "datetime": "a date-time",
    "boolean": "a boolean", "group": "a group", "repeat": "a repeat",
}


def golden_records(folder: Path, *, new_cases: bool = True) -> list[Any]:
    """Every record in ``<folder>/tests/*.input.json|csv`` (unreadable files are skipped:
    the golden test reports them); with ``new_cases`` false, none of a case with no expected file."""
    records: list[Any] = []
    tests = folder / "tests"
    if not tests.is_dir():
        return records
    for path in sorted([*tests.glob("*.input.json"), *tests.glob("*.input.csv")]):
        try:
            found = read_records(path)[0]
        except (InputError, OSError, ValueError):
            continue
        expected_path = path.with_name(path.name.rsplit(".input.", 1)[0] + ".expected.json")
        if not new_cases and not expected_path.is_file():
            continue
        expected = _expected(expected_path)
        # a case whose expected output is a refusal holds a deliberately bad record
        records.extend(
            record for index, record in enumerate(found)
            if not _refused(expected[index] if isinstance(expected, list) and index < len(expected) else expected)
        )
    return records


def _expected(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _refused(expected: Any) -> bool:
    return isinstance(expected, dict) and expected.get("resourceType") == "OperationOutcome"


# --------------------------------------------------------------------------- FHIR tables


@cache
def _table(name: str) -> dict[str, Any]:
    return load_table(name)


def _element_type(type_name: str, element: str) -> str | None:
    info = _table("r4-elements.json")["types"].get(type_name)
    if info is None:
        return None
    found: str | None = info["p"].get(element)
    return found


# http://terminology.hl7.org/CodeSystem/observation-category (R4): the system an observation
# rule's ``category`` codes are written in.
_OBSERVATION_CATEGORIES = (
    "activity", "exam", "imaging", "laboratory", "procedure", "social-history", "survey", "therapy", "vital-signs",
)


_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")


def _required_codes(type_name: str, element: str) -> list[str] | None:
    """The codes of ``type_name.element``'s required binding, as the store checks them: the R4
    definitions' bindings (``r4-bindings.json``: also ``MedicationDispense.status`` and the other
    bound codes the JSON schema has no enum for, and not ``Expression.language``, extensible)."""
    bindings = _table("r4-bindings.json")
    value_set = bindings["elements"].get(type_name, {}).get(element)
    if value_set is None:
        return None
    codes: list[str] = bindings["valueSets"][value_set]
    return codes


def _targets(type_name: str, element: str) -> list[str] | None:
    found: list[str] | None = _table("r4-reference-targets.json")["targets"].get(type_name, {}).get(element)
    return found


@cache
def _ucum_parser() -> Any:
    from ucumvert import get_ucum_parser  # a lark grammar: built once, only when a unit is checked

    return get_ucum_parser()


@cache
def ucum_problem(code: str) -> str | None:
    """Why ``code`` is not a UCUM unit expression, or None when it is one."""
    try:
        _ucum_parser().parse(code)
    except Exception:  # noqa: BLE001 - lark raises several error types; any means "not UCUM"
        return f"{code!r} is not a UCUM unit code (e.g. mm, cm, kg, mm[Hg], /min, %)"
    return None


# --------------------------------------------------------------------------- the checks


@dataclass(slots=True)
class _Checker:
    spec: MappingSpec
    ctx: CompileContext
    rule_types: dict[str, str]
    root: InputSchema | None
    every: InputSchema | None  # all golden inputs of the set: what ``match`` sees
    evidence: str = _GOLDEN  # what the schemas were built from, for messages
    issues: list[Issue] = field(default_factory=list)
    ref_types: dict[str, str] = field(default_factory=dict)

    def run(self, expressions: list[tuple[NodePath, Expression]]) -> list[Issue]:
        for name, value in self.spec.let.items():
            match = _REF_LET.search(value) if isinstance(value, str) else None
            if match:
                self.ref_types[name] = match.group(1)
        self.ref_types.update(self.rule_types)
        if self.root is not None or self.every is not None:
            for path, expression in expressions:
                self._check_reads(path, expression)
        for index, rule in enumerate(self.spec.rules):
            self._check_rule(index, rule)
        for name in ("subject", "encounter", "performer"):
            value = getattr(self.spec.defaults, name)
            element = "performer" if name == "performer" else name
            self._check_value(value, "Observation", element, ("defaults", name))
        return self.issues

    # ---- input side

    def _item_schemas(self, path: NodePath) -> dict[str, InputSchema]:
        """The schema of each repeat variable (``item``, and each level of a nested
        ``for_each``) of the rule at ``path``, where the items' path is a plain one."""
        if self.root is None or len(path) < 2 or path[0] != "rules" or not isinstance(path[1], int):
            return {}
        for_each = self.spec.rules[path[1]].for_each
        levels = [("item", for_each)] if isinstance(for_each, str) else list((for_each or {}).items())
        found: dict[str, InputSchema] = {}
        for name, text in levels:
            if path[2:] == ("for_each", name):
                break  # a level sees only the levels before it
            base, keys = self._source(text, found)
            node = base.find(keys)[0] if base is not None else None
            if node is None:
                break
            found[name] = found["item"] = node
        return found

    def _source(self, text: str, variables: dict[str, InputSchema]) -> tuple[InputSchema | None, tuple[str, ...]]:
        """The schema a plain path (``a.b``, ``%level.c``) starts from, and its keys."""
        try:
            source, steps = split_pipeline(text)
        except CompileError:
            return None, ()  # the compiler reports it
        if steps or not _SIMPLE_SOURCE.match(source):
            return None, ()
        keys = _keys(source)
        if source.startswith("%"):
            return variables.get(keys[0]), keys[1:]
        return self.root, keys

    def _check_reads(self, path: NodePath, expression: Expression) -> None:
        items = self._item_schemas(path) if expression.reads else {}
        for variable, keys in expression.reads:
            if variable is None:
                base = self.every if path == ("match",) else self.root
            else:
                base = items.get(variable)
            if base is None or not keys:
                continue
            node, problem = base.find(keys, f"%{variable}" if variable else "the record", self.evidence)
            if problem is not None:
                shown = (f"%{variable}." if variable else "") + ".".join(keys)
                self.issues.append((path, f"{shown}: {problem}"))
                return
        self._check_converter(path, expression, items)

    def _check_converter(self, path: NodePath, expression: Expression, items: dict[str, InputSchema]) -> None:
        try:
            source, steps = split_pipeline(expression.text)
        except CompileError:
            return
        if self.evidence != _GOLDEN:
            self._check_compared(path, source, items)
        base, keys = self._source(source, items)
        node = base.find(keys)[0] if base is not None and steps else None
        if node is None:
            return
        if node.kind is not None and self._check_declared(path, source, steps, node):
            return
        if steps[0][0] not in _TYPED or not node.samples:
            return
        name, args = steps[0]
        try:
            convert = build_converter(name, args, self.ctx, source)
        except ConverterArgError:
            return
        for sample in node.samples:
            if isinstance(sample, str) and not sample.strip():
                continue
            try:
                convert([sample])
            except MappingError as exc:
                self.issues.append(
                    (path, f"converter {name} does not fit {source}: the golden inputs hold "
                     f"{quote(sample)} ({exc.message})")
                )
                return

    def _check_declared(
        self, path: NodePath, source: str, steps: list[tuple[str, list[Any]]], node: InputSchema
    ) -> bool:
        """A converter against the question type a form declares (a select: every choice goes
        through the whole pipeline); whether a problem was found."""
        name = steps[0][0]
        if node.kind in ("select_one", "select_multiple") and node.choices:
            try:
                pipeline = [build_converter(step, args, self.ctx, source) for step, args in steps]
            except ConverterArgError:
                return False
            for choice in node.choices:
                values: list[Any] = [choice]
                try:
                    for convert in pipeline:
                        values = convert(values)
                except MappingError as exc:
                    self.issues.append(
                        (path, f"{source}: the choice {choice!r} in {node.form} does not go through "
                         f"{' | '.join(step for step, _ in steps)} ({exc.message})")
                    )
                    return True
            return False
        fits = _FITS.get(name)
        if fits is None or node.kind in fits or node.kind in ("any", "select_one", "select_multiple"):
            return False
        self.issues.append(
            (path, f"converter {name} does not fit {source}: {node.form} declares it "
             f"{_KIND_NAMES.get(node.kind or '', node.kind)} question (fits: {', '.join(sorted(fits))})")
        )
        return True

    def _check_compared(self, path: NodePath, source: str, items: dict[str, InputSchema]) -> None:
        """``field = 'x'`` (or ``!=``) where the form's select ``field`` has no choice ``x``."""
        try:
            ast = parse_fhirpath(source)
        except CompileError:
            return
        for node in walk_ast(ast):
            if node.get("type") != "EqualityExpression" or len(node.get("children") or []) != 2:
                continue
            left, right = node["children"]
            for field_node, literal in ((left, right), (right, left)):
                read = simple_path(field_node)
                text = str(literal.get("text", ""))
                if read is None or not (len(text) >= 2 and text[0] == text[-1] == "'"):
                    continue
                variable, keys = read
                top = self.every if path == ("match",) else self.root
                base = top if variable is None else items.get(variable)
                question = base.find(keys)[0] if base is not None else None
                value = text[1:-1]
                if question is None or question.kind != "select_one" or not question.choices:
                    continue
                if value not in question.choices:
                    close = difflib.get_close_matches(value, question.choices, n=1, cutoff=0.6)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    self.issues.append(
                        (path, f"{field_node.get('text')}: {value!r} is not a choice of that question in "
                         f"{question.form} ({', '.join(question.choices[:8])}){hint}")
                    )

    # ---- output side

    def _check_rule(self, index: int, rule: Any) -> None:
        path: NodePath = ("rules", index)
        if isinstance(rule, ResourceRule):
            self._check_object(rule.template, rule.resource_type, (*path, "template"))
        elif isinstance(rule, ObservationRule):
            self._check_object(rule.template, "Observation", (*path, "template"))
            self._check_value(rule.status, "Observation", "status", (*path, "status"))
            self._check_value(rule.code, "Observation", "code", (*path, "code"))
            categories = [rule.category] if isinstance(rule.category, str) else rule.category or []
            for category in categories:
                if category not in _OBSERVATION_CATEGORIES:
                    close = difflib.get_close_matches(category, _OBSERVATION_CATEGORIES, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    self.issues.append(
                        ((*path, "category"), f"{category!r} is not an observation-category code "
                         f"({', '.join(_OBSERVATION_CATEGORIES)}){hint}")
                    )
            for name in ("subject", "encounter", "performer"):
                self._check_value(getattr(rule, name), "Observation", name, (*path, name))
            unit = rule.unit if isinstance(rule.unit, str) or rule.unit is None else rule.unit.code
            if unit is not None and "{{" not in unit:
                problem = ucum_problem(unit)
                if problem:
                    self.issues.append(((*path, "unit"), problem))
        elif isinstance(rule, ReferralRule):
            self._check_object(rule.template, "ServiceRequest", (*path, "template"))
            self._check_value(rule.facility, "ServiceRequest", "performer", (*path, "facility"))
            self._check_value(rule.code, "ServiceRequest", "code", (*path, "code"))
            for name in ("subject", "encounter", "requester"):
                self._check_value(getattr(rule, name), "ServiceRequest", name, (*path, name))

    def _check_object(self, value: dict[str, Any], type_name: str, path: NodePath) -> None:
        for key, member in value.items():
            self._check_value(member, type_name, key, (*path, key))
        code = value.get("code")
        if type_name in _QUANTITIES and value.get("system") == _UCUM and isinstance(code, str) and "{{" not in code:
            problem = ucum_problem(code)
            if problem:
                self.issues.append(((*path, "code"), problem))

    def _check_value(self, value: Any, type_name: str, element: str, path: NodePath) -> None:
        if value is None:
            return
        declared = _element_type(type_name, element)
        if declared is None:
            return
        element_type = declared.removesuffix("[]")
        if isinstance(value, list) and not declared.endswith("[]"):
            self.issues.append((path, f"{type_name}.{element} takes one {element_type}, not a list"))
            return
        if isinstance(value, list):
            for index, item in enumerate(value):
                self._check_value_as(item, type_name, element, element_type, (*path, index))
        else:
            self._check_value_as(value, type_name, element, element_type, path)

    def _check_value_as(self, value: Any, owner: str, element: str, element_type: str, path: NodePath) -> None:
        if element_type == "Reference":
            self._check_reference(value, owner, element, path)
            return
        if isinstance(value, dict):
            if element_type in _table("r4-elements.json")["types"]:
                self._check_object(value, element_type, path)
            elif element_type.startswith("#") or element_type in _table("r4-elements.json")["primitives"]:
                self.issues.append((path, f"{owner}.{element} is a {_plain_type(element_type)}, not an object"))
            return
        if not isinstance(value, str):
            return
        if "{{" in value:
            self._check_placed(value, owner, element, element_type, path)
            return
        codes = _required_codes(owner, element)
        if codes is not None:
            if value not in codes:
                close = difflib.get_close_matches(value, codes, n=1, cutoff=0.0)
                hint = f"; did you mean {close[0]!r}?" if close and len(codes) > 8 else ""
                allowed = ", ".join(codes) if len(codes) <= 8 else f"{len(codes)} codes"
                self.issues.append(
                    (path, f"{owner}.{element}: {value!r} is not in its required value set "
                     f"({allowed}){hint}")
                )
            return
        primitive = _table("r4-elements.json")["primitives"].get(element_type)
        if owner == "Coding" and element == "system" and not _ABSOLUTE_URI.match(value):
            self.issues.append(
                (path, f"Coding.system: {value!r} is not an absolute URI (the code system's URL, e.g. "
                 "http://loinc.org, http://snomed.info/sct, or urn:...)")
            )
        elif primitive and primitive[1] and not re.match(primitive[1], value):
            self.issues.append((path, f"{owner}.{element}: {value!r} is not a valid FHIR {element_type}"))
        elif primitive and primitive[0] in ("boolean", "integer", "decimal", "positiveInt", "unsignedInt"):
            self.issues.append((path, f"{owner}.{element}: a {element_type} is needed, not the text {value!r}"))

    def _check_placed(self, value: str, owner: str, element: str, element_type: str, path: NodePath) -> None:
        """A whole ``{{ path }}`` copied into a text element (string, id, code, uri...) from a field
        the golden inputs or the form hold numbers in: FHIR refuses a JSON number there."""
        whole = _WHOLE_PLACEHOLDER.fullmatch(value)
        primitive = _table("r4-elements.json")["primitives"].get(element_type)
        if whole is None or not (element_type.startswith("#") or (primitive and primitive[0] == "string")):
            return
        source = whole.group(1).strip()
        base, keys = self._source(source, self._item_schemas(path))
        node = base.find(keys)[0] if base is not None and keys else None
        if node is None:
            return
        number = next((s for s in node.samples if type(s) in (int, float, DecimalLiteral)), None)
        if number is None and node.kind not in ("integer", "decimal"):
            return
        held = f"the golden inputs hold {number!r}" if number is not None else f"the form declares it {node.kind}"
        self.issues.append(
            (path, f"{owner}.{element} is a {_plain_type(element_type)} (text) but {source} is a number "
             f"({held}); write {{{{ {source} | string }}}}")
        )

    def _check_reference(self, value: Any, owner: str, element: str, path: NodePath) -> None:
        allowed = _targets(owner, element)
        if isinstance(value, dict):
            known = _table("r4-elements.json")["types"]["Reference"]["p"]
            for key in value:
                if key not in known:
                    self.issues.append(
                        (path, f"{owner}.{element} is a Reference: {key!r} is not one of its elements "
                         "(reference, type, identifier, display)")
                    )
            self._check_object(value, "Reference", path)
            return
        if not isinstance(value, str):
            return
        match = _VARIABLE_ONLY.match(value)
        target = self.ref_types.get(match.group(1)) if match else None
        if target is None:
            ref = re.search(r"\|\s*ref\(\s*'([A-Z][A-Za-z]+)'\s*\)\s*\}\}\s*$", value)
            target = ref.group(1) if ref else None
        if target is None or not allowed or "Resource" in allowed or target in allowed:
            return
        self.issues.append(
            (path, f"{owner}.{element} may refer to {', '.join(allowed)}, not {target}")
        )


_WHOLE_PLACEHOLDER = re.compile(r"\s*\{\{((?:(?!\}\}|\{\{).)*)\}\}\s*", re.DOTALL)


def _plain_type(element_type: str) -> str:
    return "code" if element_type.startswith("#") else element_type


def _keys(source: str) -> tuple[str, ...]:
    parts = re.findall(r"`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)", source)
    return tuple(quoted or plain for quoted, plain in parts)


def check_mapping(
    spec: MappingSpec,
    ctx: CompileContext,
    expressions: list[tuple[NodePath, Expression]],
    records: list[Any],
    every: list[Any],
    forms: list[InputSchema] | None = None,
) -> list[Issue]:
    """Every static problem of one compiled mapping; ``records``: the golden inputs it
    matches, ``every``: all golden inputs of its set; ``forms``: the schemas of the form
    definitions the set declares for this mapping (they join both: another mapping's form
    says nothing about the records this ``match`` must tell apart)."""
    rule_types = {rule.name: _made_type(rule) for rule in spec.rules}
    own = forms or []
    names = sorted({schema.form for schema in own if schema.form})
    evidence = f"{_GOLDEN} or {', '.join(names)}" if names else _GOLDEN
    checker = _Checker(spec, ctx, rule_types, _schema(records, own), _schema(every, own), evidence)
    return checker.run(expressions)


def _made_type(rule: Any) -> str:
    if isinstance(rule, ResourceRule):
        return rule.resource_type
    return "Observation" if isinstance(rule, ObservationRule) else "ServiceRequest"


def _schema(records: list[Any], forms: list[InputSchema]) -> InputSchema | None:
    if not records and not forms:
        return None  # no golden input and no form: nothing to infer from
    root = InputSchema()
    for record in records:
        root.add(record)
    for form in forms:
        root.merge(form)
    return root
