"""Loading ``mappings/``: ConceptMaps, mapping sets and their mapping files, compiled once.

Layout::

    mappings/
      conceptmaps/*.yaml          FHIR ConceptMaps (code tables), shared by all sets
      <set>/set.yaml              SetSpec: name, source system URI, file order
      <set>/<record-type>.yaml    MappingSpec, one per source record type
      <set>/conceptmaps/*.yaml    the set's own ConceptMaps (an id also in conceptmaps/
                                  replaces the shared one, for this set only)
      <set>/tests/                golden tests (see golden.py)

Every problem found (YAML syntax, schema, FHIRPath syntax, unknown converters, variables,
ConceptMaps or FHIR elements) is collected as a ``LoadIssue`` with file and line, so
``gateway mappings validate`` lists them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from gateway.fhir import can_retract_by_status
from gateway.mapping.checks import check_mapping, golden_records
from gateway.mapping.conceptmaps import ConceptTable, load_concept_tables
from gateway.mapping.converters import CompileContext
from gateway.mapping.engine import CompiledMapping, CompiledRule, MappingSet
from gateway.mapping.errors import LoadIssue, MappingError, MappingLoadError
from gateway.mapping.expressions import Expression, Scope
from gateway.mapping.forms import FormError, read_form
from gateway.mapping.formschema import LAYOUTS, record_schema
from gateway.mapping.inputs import InputError, read_records
from gateway.mapping.inputschema import InputSchema
from gateway.mapping.memo import FolderMemo
from gateway.mapping.outbound import load_outbound
from gateway.mapping.rules import compile_rule, defaults_reader, identifier_shape
from gateway.mapping.spec import MappingSpec, SetSpec
from gateway.mapping.templates import Builder, TemplateCompiler
from gateway.mapping.yamlfile import NodePath, YamlDocument, YamlSyntaxError, format_path, read_yaml

__all__ = ["CONCEPTMAP_DIR", "SET_FILE", "LoadedMappings", "load_mapping_sets", "load_mappings", "validate_mappings"]

_BUILTINS = frozenset({"record_id", "system", "mapping", "version"})
_REPEAT = frozenset({"item", "index"})
_RESERVED = _BUILTINS | _REPEAT | {"key", "context", "ucum", "resource", "rootResource"}
SET_FILE = "set.yaml"
CONCEPTMAP_DIR = "conceptmaps"


@dataclass(slots=True)
class LoadedMappings:
    """Everything loaded from one mappings folder (``issues`` empty when all is well)."""

    root: Path
    sets: dict[str, MappingSet] = field(default_factory=dict)
    tables: dict[str, ConceptTable] = field(default_factory=dict)
    issues: list[LoadIssue] = field(default_factory=list)
    #: per mapping tag: every compiled expression with its node path (for coverage)
    expressions: dict[str, list[tuple[NodePath, Expression]]] = field(default_factory=dict)
    tables_used: set[str] = field(default_factory=set)


_MEMO = FolderMemo()


def load_mappings(root: Path, *, interpret: bool = False, new_cases: bool = True) -> LoadedMappings:
    """Load and compile everything under ``root``; never raises for bad files.

    ``new_cases``: whether golden inputs with no expected file yet feed the static checks
    (``mappings test --update`` writes their expected files, refusals included, so a
    deliberately bad record must not keep the set from loading before it has one).

    An unchanged folder is compiled once per process (``memo.FolderMemo``); each caller gets
    its own containers, sharing the compiled sets, which nothing changes after loading.
    """
    if not root.is_dir():
        loaded = LoadedMappings(root)
        loaded.issues.append(LoadIssue(str(root), 0, "", "mappings folder not found"))
        return loaded
    done = _MEMO.get(root, (interpret, new_cases), lambda: _load_all(root, interpret, new_cases))
    return LoadedMappings(
        root, dict(done.sets), dict(done.tables), list(done.issues),
        {tag: list(found) for tag, found in done.expressions.items()}, set(done.tables_used),
    )  # fmt: skip


def _load_all(root: Path, interpret: bool, new_cases: bool = True) -> LoadedMappings:
    loaded = LoadedMappings(root)
    loaded.tables = load_concept_tables(root / CONCEPTMAP_DIR, loaded.issues)
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and (path / SET_FILE).is_file()):
        mapping_set = _load_set(folder, loaded, interpret, new_cases)
        if mapping_set is None:
            continue
        if mapping_set.name in loaded.sets:
            loaded.issues.append(
                LoadIssue(str(folder / SET_FILE), 1, "name", f"set {mapping_set.name!r} twice")
            )
            continue
        loaded.sets[mapping_set.name] = mapping_set
    return loaded


def load_mapping_sets(root: Path, *, interpret: bool = False) -> dict[str, MappingSet]:
    """Load every mapping set under ``root``; raises ``MappingLoadError`` listing all issues."""
    loaded = load_mappings(root, interpret=interpret)
    if loaded.issues:
        raise MappingLoadError(loaded.issues)
    return loaded.sets


def validate_mappings(root: Path) -> list[LoadIssue]:
    """Every problem in the mapping and ConceptMap files under ``root`` (empty if none)."""
    return load_mappings(root).issues


def _validated(model: type[pydantic.BaseModel], doc: YamlDocument, file: str, issues: list[LoadIssue]) -> Any:
    try:
        return model.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            where = doc.data_path(error["loc"])
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling)"
            elif error["type"] == "missing" and error["loc"]:
                message = f"{error['loc'][-1]!s} is required here"
            elif error["type"] == "string_pattern_mismatch" and error["loc"][-1:] in (("name",), ("mapping",)):
                message = (
                    "must be lower case letters, digits and _ (starting with a letter), at most 63 characters"
                    if error["loc"][-1] == "name" and "rules" in error["loc"]
                    else f"{message} (lower case letters, digits, '.', '_' and '-')"
                )
            elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                message = "kind must be one of: resource, observation, referral"
                where = doc.data_path((*where, "kind"))
            issues.append(LoadIssue(file, doc.line_of(where), _describe(where, doc), message))
        return None


def _describe(path: NodePath, doc: YamlDocument) -> str:
    text = format_path(path)
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        try:
            name = doc.data["rules"][path[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        if name:
            head = f"rules[{path[1]}] ({name})"
            rest = format_path(path[2:])
            return f"{head}.{rest}" if rest and not rest.startswith("[") else head + rest
    return text


def _load_set(folder: Path, loaded: LoadedMappings, interpret: bool, new_cases: bool = True) -> MappingSet | None:
    set_file = folder / SET_FILE
    try:
        doc = read_yaml(set_file)
    except YamlSyntaxError as exc:
        loaded.issues.append(LoadIssue(str(set_file), exc.line, "", exc.message))
        return None
    spec: SetSpec | None = _validated(SetSpec, doc, str(set_file), loaded.issues)
    if spec is None:
        return None
    if spec.mappings is not None:
        files = [folder / name for name in spec.mappings]
        for index, path in enumerate(files):
            if not path.is_file():
                line = doc.line_of(("mappings", index))
                loaded.issues.append(
                    LoadIssue(str(set_file), line, f"mappings[{index}]", f"{path.name} not found")
                )
        files = [path for path in files if path.is_file()]
    else:
        files = sorted(path for path in folder.glob("*.yaml") if path.name != SET_FILE)
    mappings: list[CompiledMapping] = []
    names: set[str] = set()
    golden = golden_records(folder, new_cases=new_cases)
    for index, name in enumerate(spec.inputs):
        try:
            golden.extend(read_records(folder / name)[0])
        except (InputError, OSError) as exc:
            loaded.issues.append(
                LoadIssue(str(set_file), doc.line_of(("inputs", index)), f"inputs[{index}]", f"cannot read: {exc}")
            )
    forms = _form_schemas(folder, spec, doc, files, loaded.issues)
    tables = loaded.tables
    if (folder / CONCEPTMAP_DIR).is_dir():
        tables = {**loaded.tables, **load_concept_tables(folder / CONCEPTMAP_DIR, loaded.issues)}
    for path in files:
        compiled = _load_mapping(path, spec, loaded, interpret, (golden, forms), tables)
        if compiled is None:
            continue
        if compiled.name in names:
            loaded.issues.append(
                LoadIssue(str(path), 1, "mapping", f"mapping name {compiled.name!r} used twice")
            )
        names.add(compiled.name)
        mappings.append(compiled)
    if not files:
        loaded.issues.append(LoadIssue(str(set_file), 1, "", "the set has no mapping files"))
    mapping_set = MappingSet(spec.name, spec.system, mappings, spec.title, str(folder))
    mapping_set.outbound = load_outbound(folder, spec.system, tables, loaded.issues, interpret=interpret)
    if spec.retract is not None:
        ctx = CompileContext(system=spec.system, tables=tables, constants={"system": [spec.system]})
        compiler = TemplateCompiler(ctx, interpret=interpret)
        scope = Scope(frozenset({"system"}), "retract sees only %system")
        mapping_set.retract_when = compiler.expression(spec.retract.when, ("retract", "when"), scope)
        mapping_set.retract_id = compiler.expression(spec.retract.record_id, ("retract", "record_id"), scope)
        if spec.retract.modified is not None:
            mapping_set.retract_modified = compiler.expression(
                spec.retract.modified, ("retract", "modified"), scope
            )
        for node_path, message in compiler.issues:
            loaded.issues.append(LoadIssue(str(set_file), doc.line_of(node_path), format_path(node_path), message))
    return mapping_set


def _form_schemas(
    folder: Path, spec: SetSpec, doc: YamlDocument, files: list[Path], issues: list[LoadIssue]
) -> dict[str, list[InputSchema]]:
    """The input schema of each form definition ``set.yaml`` lists, by mapping file name."""
    schemas: dict[str, list[InputSchema]] = {}
    set_file = str(folder / SET_FILE)
    names = {path.name for path in files}
    for index, form in enumerate(spec.forms):
        where: NodePath = ("forms", index)
        problem = None
        layout = form.layout or ("commcare" if form.file.lower().endswith(".json") else None)
        if form.mapping not in names:
            where, problem = (*where, "mapping"), f"{form.mapping!r} is not a mapping file of this set"
        elif layout is None:
            where, problem = (*where, "file"), f"say how the source lays out {form.file}: layout: {' | '.join(LAYOUTS)}"
        else:
            try:
                tree = read_form(folder / form.file, form.form)
                schemas.setdefault(form.mapping, []).append(record_schema(tree, layout, form.file))
            except FormError as exc:
                where, problem = (*where, "file"), str(exc)
        if problem is not None:
            issues.append(LoadIssue(set_file, doc.line_of(where), format_path(where), problem))
    return schemas


def _load_mapping(
    path: Path,
    set_spec: SetSpec,
    loaded: LoadedMappings,
    interpret: bool,
    inputs: tuple[list[Any], dict[str, list[InputSchema]]],
    tables: dict[str, ConceptTable],
) -> CompiledMapping | None:
    """Compile and check one mapping file; ``inputs``: the set's golden records and its forms'
    schemas by mapping file name."""
    file = str(path)
    golden, forms = inputs
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        loaded.issues.append(LoadIssue(file, exc.line, "", exc.message))
        return None
    spec: MappingSpec | None = _validated(MappingSpec, doc, file, loaded.issues)
    if spec is None:
        return None
    ctx = CompileContext(
        system=set_spec.system,
        tables=tables,
        constants={"system": [set_spec.system], "mapping": [spec.mapping], "version": [spec.version]},
    )
    compiler = TemplateCompiler(ctx, interpret=interpret)
    compiled = _compile(spec, set_spec, file, compiler)
    problems = list(compiler.issues)
    # The static checks run even when compiling failed, so validate lists every mistake at once.
    problems += check_mapping(
        spec, ctx, compiler.expressions, _matching(golden, compiler, set_spec), golden,
        forms=forms.get(path.name, []),
    )
    for node_path, message in problems:
        loaded.issues.append(LoadIssue(file, doc.line_of(node_path), _describe(node_path, doc), message))
    loaded.tables_used |= ctx.tables_used
    if problems or compiled is None:
        return None
    compiled.lines = {rule.name: doc.line_of(("rules", index)) for index, rule in enumerate(spec.rules)}
    compiled.lines.update({f"let {name}": doc.line_of(("let", name)) for name in spec.let})
    compiled.lines.update({f"defaults.{name}": doc.line_of(("defaults", name)) for name in
                           ("subject", "encounter", "effective", "performer")})
    compiled.lines["provenance"] = doc.line_of(("provenance",))
    loaded.expressions[compiled.tag] = compiler.expressions
    return compiled


def _matching(golden: list[Any], compiler: TemplateCompiler, set_spec: SetSpec) -> list[Any]:
    """The golden inputs this mapping's ``match`` accepts."""
    match = next((expr for path, expr in compiler.expressions if path == ("match",)), None)
    if match is None:
        return [record for record in golden if isinstance(record, dict)]
    env = {"system": [set_spec.system]}
    chosen: list[Any] = []
    for record in golden:
        try:
            if isinstance(record, dict) and match.run(record, env) == [True]:
                chosen.append(record)
        except MappingError:
            continue
    return chosen


def _compile(spec: MappingSpec, set_spec: SetSpec, file: str, tc: TemplateCompiler) -> CompiledMapping | None:
    issues = tc.issues
    rule_names: set[str] = set()
    for index, rule in enumerate(spec.rules):
        if rule.name in rule_names:
            issues.append((("rules", index, "name"), f"rule name {rule.name!r} is used twice"))
        rule_names.add(rule.name)
    for name in spec.let:
        if name in _RESERVED:
            issues.append((("let", name), f"%{name} is reserved; choose another name"))
        if name in rule_names:
            issues.append((("let", name), f"%{name} is also a rule name"))
    record_id = tc.expression(spec.record_id, ("record_id",), Scope(frozenset(), "record_id runs first"))
    modified = (
        tc.expression(spec.modified, ("modified",), Scope(frozenset(), "modified sees only the record"))
        if spec.modified is not None
        else None
    )
    match = (
        tc.expression(spec.match, ("match",), Scope(frozenset({"system"}), "match sees only %system"))
        if spec.match is not None
        else None
    )
    lets: list[tuple[str, Builder]] = []
    visible = set(_BUILTINS)
    for name, value in spec.let.items():
        scope = Scope(frozenset(visible), "a let sees built-ins and earlier lets only")
        lets.append((name, tc.template(value, ("let", name), scope).build))
        visible.add(name)
    condition_vars = frozenset(visible)
    body_vars = condition_vars | frozenset(rule.name for rule in spec.rules)
    body_scope = Scope(body_vars, "rules see built-ins, lets and rules")
    defaults: list[tuple[str, Builder]] = []
    readers: dict[str, Builder] = {}
    for field_name in ("subject", "encounter", "effective", "performer"):
        value = getattr(spec.defaults, field_name)
        if value is not None:
            defaults.append((field_name, tc.template(value, ("defaults", field_name), body_scope).build))
            readers[field_name] = defaults_reader(field_name)
    recorded = tc.template(spec.provenance.recorded, ("provenance", "recorded"), body_scope).build
    agent = (
        tc.template(spec.provenance.agent, ("provenance", "agent"), body_scope).build
        if spec.provenance.agent is not None
        else None
    )
    rules: list[CompiledRule] = []
    groups: dict[str, list[str]] = {}  # for_each text → the repeating rules over those items
    for rule in spec.rules:
        if rule.for_each is not None:
            groups.setdefault(rule.repeat_text() or "", []).append(rule.name)
    for index, rule in enumerate(spec.rules):
        path: NodePath = ("rules", index)
        repeat = rule.for_each is not None
        levels = _levels(rule, path, tc, condition_vars | rule_names)
        extra = _REPEAT | {name for level, _ in levels for name in (level, f"{level}_index")} if repeat else frozenset()
        rule_lets: list[tuple[str, Builder]] = []
        let_names: set[str] = set()
        if rule.let and not repeat:
            issues.append(((*path, "let"), "a rule's let needs for_each (use the mapping's let)"))
        for name, value in rule.let.items():
            if name in _RESERVED or name in visible or name in rule_names:
                issues.append(((*path, "let", name), f"%{name} is already a name here; choose another"))
            let_scope = Scope(condition_vars | extra | let_names, "a rule's let sees lets, %item and %index")
            rule_lets.append((name, tc.template(value, (*path, "let", name), let_scope).build))
            let_names.add(name)
        siblings = [
            name for name in groups.get(rule.repeat_text() or "", []) if name != rule.name
        ] if repeat else []
        condition_scope = Scope(
            condition_vars | extra | let_names, "when/for_each/key/id see built-ins, lets and the rule's lets"
        )
        body = (body_vars - ({rule.name} if repeat else set())) | extra | let_names | ({"key"} if repeat else set())
        compiled = CompiledRule(rule.name, compile_rule(rule, tc, readers, Scope(frozenset(body)), path))
        compiled.lets = rule_lets
        used = {name for where, expr in tc.expressions if where[:2] == path for name in expr.variables}
        # only the siblings the rule refers to are worked out per item: the others cost nothing
        compiled.sibling_names = tuple(name for name in siblings if name in used)
        if isinstance(rule.for_each, str):
            compiled.for_each = tc.expression(rule.for_each, (*path, "for_each"), Scope(condition_vars))
        elif levels:
            compiled.levels = tuple((name, level) for name, level in levels if level is not None)
            compiled.for_each = compiled.levels[0][1] if len(compiled.levels) == len(levels) else None
        elif rule.key is not None:
            issues.append(((*path, "key"), "key needs for_each"))
        if rule.when is not None:
            compiled.when = tc.expression(rule.when, (*path, "when"), condition_scope)
        if rule.key is not None and repeat:
            compiled.key = tc.expression(rule.key, (*path, "key"), condition_scope)
        if rule.id is not None:
            id_scope = Scope(
                condition_scope.variables | ({"key"} if repeat else set()), condition_scope.where
            )
            compiled.entity = tc.expression(rule.id, (*path, "id"), id_scope)
        compiled.on_retract = rule.on_retract
        compiled.on_update = rule.on_update
        if rule.on_retract == "entered-in-error" and not any(
            can_retract_by_status(rtype) for rtype in compiled.program.resource_types
        ):
            types = ", ".join(compiled.program.resource_types)
            issues.append(((*path, "on_retract"), f"{types} has no status that marks it entered in error; "
                           "use delete or keep"))
        for rtype in compiled.program.resource_types:
            try:
                compiled.identifier_shapes[rtype] = identifier_shape(rtype)
            except (ValueError, KeyError, AttributeError):
                compiled.identifier_shapes[rtype] = None
        rules.append(compiled)
    if record_id is None or issues:
        return None
    collected = _collected(spec, groups, tc)
    return CompiledMapping(
        collected=collected,
        name=spec.mapping,
        version=spec.version,
        set_name=set_spec.name,
        system=set_spec.system,
        file=file,
        record_id=record_id,
        modified=modified,
        match=match,
        lets=lets,
        defaults=defaults,
        rules=rules,
        recorded=recorded,
        agent=agent,
        description=spec.description,
        recorded_path=_expression_text(spec.provenance.recorded) or "provenance.recorded",
    )


def _levels(
    rule: Any, path: NodePath, tc: TemplateCompiler, taken: frozenset[str] | set[str]
) -> list[tuple[str, Expression | None]]:
    """The named levels of a nested ``for_each`` (outermost first), each compiled in a scope
    that sees the levels before it; ``[]`` for a plain ``for_each``."""
    if not isinstance(rule.for_each, dict):
        return []
    if not rule.for_each:
        tc.issues.append(((*path, "for_each"), "for_each needs at least one level"))
        return []
    levels: list[tuple[str, Expression | None]] = []
    seen: set[str] = set()
    for name, text in rule.for_each.items():
        where = (*path, "for_each", name)
        if name in _RESERVED or name in taken or name in rule.let or {name, f"{name}_index"} & seen:
            tc.issues.append((where, f"%{name} is already a name here; choose another level name"))
        scope = Scope(frozenset(taken) | seen, "a level sees built-ins, lets and the levels before it")
        levels.append((name, tc.expression(text, where, scope)))
        seen |= {name, f"{name}_index"}
    return levels


def _collected(spec: MappingSpec, groups: dict[str, list[str]], tc: TemplateCompiler) -> frozenset[str]:
    """Repeating rules some expression refers to from outside their own items."""
    repeating = {rule.name: rule.repeat_text() for rule in spec.rules if rule.for_each is not None}
    found: set[str] = set()
    for path, expression in tc.expressions:
        inside = None
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            inside = spec.rules[path[1]]
        for name in expression.variables & repeating.keys():
            same_items = inside is not None and inside.for_each is not None and (
                name in groups.get(inside.repeat_text() or "", [])
            )
            if not same_items:
                found.add(name)
    return frozenset(found)


def _expression_text(value: Any) -> str | None:
    """``"{{ doc.reported_date | epoch_ms }}"`` → ``"doc.reported_date"`` (for error paths)."""
    if isinstance(value, str) and value.strip().startswith("{{") and value.strip().endswith("}}"):
        return value.strip()[2:-2].split("|")[0].strip() or None
    return None
