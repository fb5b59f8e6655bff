"""Loading DHIS2 mapping files, compiling their expressions and binding them to metadata.

``load_tracker`` / ``load_aggregate`` read a mapping, compile every expression with the
mapping engine (``gateway.mapping.expressions``; ConceptMap tables as ``load_tables`` finds
them) and resolve each metadata
reference against a ``MetadataSnapshot``. Every problem is collected as a ``LoadIssue``
naming file, line and rule — unknown data elements, data elements not in the stage,
attributes the program does not have, org units that do not exist, option codes a
ConceptMap can produce that the option set lacks — and raised together as
``MappingLoadError``, before anything is sent (``gateway mappings validate --against``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from gateway.connectors.dhis2.mapping_spec import (
    AggregateMapping,
    OrgUnitTable,
    StageRule,
    TrackerMapping,
)
from gateway.connectors.dhis2.metadata import MetadataSnapshot
from gateway.mapping import (
    CONCEPTMAP_DIR,
    SET_FILE,
    CompileContext,
    CompileError,
    ConceptTable,
    Expression,
    LoadIssue,
    MappingLoadError,
    Scope,
    YamlDocument,
    YamlSyntaxError,
    compile_expression,
    format_path,
    load_concept_tables,
    read_yaml,
)

__all__ = [
    "BoundAggregate",
    "BoundAttribute",
    "BoundDataValue",
    "BoundStage",
    "BoundTracker",
    "check_mapping",
    "load_aggregate",
    "load_org_unit_table",
    "load_tables",
    "load_tracker",
]

Model = TypeVar("Model", bound=pydantic.BaseModel)
_SCOPE = Scope(frozenset(), "DHIS2 mapping expressions read the resource only")


@dataclass(frozen=True, slots=True)
class BoundAttribute:
    """An attribute rule bound to its DHIS2 attribute."""

    uid: str
    value_type: str
    option_codes: frozenset[str] | None
    value: Expression


@dataclass(frozen=True, slots=True)
class BoundDataValue:
    """A data value rule bound to its DHIS2 data element."""

    uid: str
    value_type: str
    option_codes: frozenset[str] | None
    source: str
    codes: frozenset[tuple[str, str]]
    where: Expression | None
    value: Expression | None
    present: str | None
    absent: str | None
    # Compulsory in its program stage: DHIS2 never lets a validated event's value of it be
    # deleted (E1076), so one the record no longer has is left as DHIS2 holds it, not cleared.
    compulsory: bool = False


@dataclass(frozen=True, slots=True)
class BoundStage:
    """A stage rule bound to its program stage."""

    name: str
    uid: str
    when: Expression
    occurred_at: Expression
    org_unit: tuple[Expression, ...]
    status: dict[str, str]
    data_values: tuple[BoundDataValue, ...]
    # The stage's validationStrategy: ON_COMPLETE validates data values of COMPLETED events only,
    # ON_UPDATE_AND_INSERT those of every event (SCHEDULE and SKIPPED ones never).
    validation_strategy: str = "ON_COMPLETE"


@dataclass(frozen=True, slots=True)
class BoundTracker:
    """A tracker mapping ready to transform resources."""

    name: str
    version: str
    program: str
    tracked_entity_type: str
    org_units: OrgUnitTable
    te_org_unit: tuple[Expression, ...]
    attributes: tuple[BoundAttribute, ...]
    # The program's own attributes (programTrackedEntityAttributes): an enrollment repeats the
    # tracked entity's values of these, since DHIS2 checks mandatory ones (E1018) against the
    # enrollment and the tracked entity stored before the import, not one sent alongside.
    program_attributes: frozenset[str]
    episode_filter: Expression | None
    enrolled_at: Expression
    enrollment_org_unit: tuple[Expression, ...]
    enrollment_status: dict[str, str]
    stages: tuple[BoundStage, ...]
    # Mandatory attributes of the tracked entity type or the program: DHIS2 never lets their
    # values be deleted (E1076), so one the record no longer has is left as it is, not cleared.
    mandatory_attributes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BoundAggregate:
    """An aggregate mapping ready to turn MeasureReports into data value sets."""

    name: str
    measure: str
    data_set: str
    period_type: str
    attribute_option_combo: str | None
    complete: bool
    org_units: OrgUnitTable
    # group token → (data element, value type, stratifier token, stratum code → COC, total COC)
    groups: dict[tuple[str, str], tuple[str, str, tuple[str, str] | None, dict[str, str], str | None]]


def load_tables(mappings_root: Path, issues: list[LoadIssue]) -> dict[str, ConceptTable]:
    """The ConceptMaps DHIS2 mappings' ``code()`` sees, as the FHIR side's sets see theirs.

    The shared ones (``conceptmaps/``); those of a mapping set's own folder (``<set>/conceptmaps/``)
    whose id no shared table and no other set uses (two sets' tables of one id are each their set's
    own: DHIS2 cannot choose, so neither is seen); and DHIS2's own (``dhis2/conceptmaps/``), which
    replace any of those with the same id, as a set's own replace the shared ones for that set.
    """
    tables = load_concept_tables(mappings_root / CONCEPTMAP_DIR, issues)
    by_sets: dict[str, list[ConceptTable]] = {}
    for folder in _set_folders(mappings_root):
        for table_id, table in load_concept_tables(folder / CONCEPTMAP_DIR, issues).items():
            by_sets.setdefault(table_id, []).append(table)
    for table_id, defined in by_sets.items():
        if table_id not in tables and len(defined) == 1:
            tables[table_id] = defined[0]
    return {**tables, **load_concept_tables(mappings_root / "dhis2" / CONCEPTMAP_DIR, issues)}


def _set_folders(mappings_root: Path) -> list[Path]:
    """The mapping sets' folders (those with a ``set.yaml``) that have ConceptMaps of their own."""
    if not mappings_root.is_dir():
        return []
    return sorted(
        folder for folder in mappings_root.iterdir()
        if (folder / SET_FILE).is_file() and (folder / CONCEPTMAP_DIR).is_dir()
    )  # fmt: skip


def _parse(
    path: Path, model: type[Model], issues: list[LoadIssue]
) -> tuple[Model | None, YamlDocument | None]:
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        issues.append(LoadIssue(str(path), exc.line, "", exc.message))
        return None, None
    try:
        return model.model_validate(doc.data), doc
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = doc.data_path(error["loc"])
            issues.append(LoadIssue(str(path), doc.line_of(where), format_path(where), error["msg"]))
        return None, doc


def load_org_unit_table(path: Path, issues: list[LoadIssue] | None = None) -> OrgUnitTable:
    """Read an org-unit table; raise ``MappingLoadError`` when invalid and no list is given."""
    own = issues if issues is not None else []
    table, _ = _parse(path, OrgUnitTable, own)
    if table is None:
        if issues is None:
            raise MappingLoadError(own)
        return OrgUnitTable(kind="dhis2-org-units")
    return table


class _Binder:
    """Compiles expressions and resolves references of one file, collecting issues."""

    def __init__(
        self,
        path: Path,
        doc: YamlDocument,
        snapshot: MetadataSnapshot,
        tables: dict[str, ConceptTable],
        issues: list[LoadIssue],
    ) -> None:
        self.path, self.doc, self.snapshot, self.tables, self.issues = path, doc, snapshot, tables, issues

    def issue(self, where: tuple[str | int, ...], message: str) -> None:
        self.issues.append(LoadIssue(str(self.path), self.doc.line_of(where), format_path(where), message))

    def expr(self, text: str, where: tuple[str | int, ...]) -> tuple[Expression | None, set[str]]:
        ctx = CompileContext(system="dhis2", tables=self.tables)
        try:
            return compile_expression(text, ctx, _SCOPE), set(ctx.tables_used)
        except CompileError as exc:
            self.issue(where, str(exc))
            return None, set()

    def ref(self, collection: str, ref: str, where: tuple[str | int, ...]) -> str | None:
        found = _lookup(self.snapshot, collection, ref)
        if found is None:
            self.issue(where, f"{collection[:-1]} {ref} does not exist in DHIS2 ({self.snapshot.base_url})")
        return found

    def combo(self, ref: str, valid: set[str], element: str, where: tuple[str | int, ...]) -> str | None:
        """A category option combo of ``element`` (a stratum's or the total's)."""
        coc = self.ref("categoryOptionCombos", ref, where)
        if coc is not None and coc not in valid:
            self.issue(where, f"{ref} is not a category option combo of {element}")
        return coc

    def option_codes(self, collection: str, uid: str) -> frozenset[str] | None:
        option_set = self.snapshot.option_set_of(collection, uid)
        return None if option_set is None else frozenset(self.snapshot.option_codes(option_set))

    def check_table_codes(
        self, used: Iterable[str], codes: frozenset[str] | None, where: tuple[str | int, ...]
    ) -> None:
        if codes is None:
            return
        for table_id in used:
            table = self.tables[table_id]
            produced = {c["code"] for source in table.source_codes for c in table.lookup(source) or ()}
            unknown = sorted(produced - codes)
            if unknown:
                self.issue(where, f"ConceptMap {table_id} gives option codes the option set lacks: {unknown}")

    def check_constant(
        self, value: str | None, codes: frozenset[str] | None, where: tuple[str | int, ...]
    ) -> None:
        if value is not None and codes is not None and value not in codes:
            self.issue(where, f"{value!r} is not an option code of the data element's option set")


def _token(text: str) -> tuple[str, str]:
    system, _, code = text.rpartition("|")
    return system, code


def _stage(binder: _Binder, rule: StageRule, index: int, program: str | None) -> BoundStage | None:
    base: tuple[str | int, ...] = ("stages", index)
    uid = binder.ref("programStages", rule.program_stage, (*base, "program_stage"))
    if (
        uid is not None
        and program is not None
        and uid
        not in {
            s["id"]
            for s in binder.snapshot.collections.get("programStages", [])
            if (s.get("program") or {}).get("id") == program
        }
    ):
        binder.issue((*base, "program_stage"), f"program stage {rule.program_stage} is not in the program")
    members = binder.snapshot.stage_elements(uid) if uid else {}
    values: list[BoundDataValue] = []
    for v_index, dv in enumerate(rule.data_values):
        where = (*base, "data_values", v_index)
        element = binder.ref("dataElements", dv.data_element, (*where, "data_element"))
        if element is not None and uid is not None and element not in members:
            binder.issue(
                (*where, "data_element"), f"data element {dv.data_element} is not in stage {rule.name}"
            )
        filter_expr, _ = binder.expr(dv.where, (*where, "where")) if dv.where else (None, set())
        value_expr, used = binder.expr(dv.value, (*where, "value")) if dv.value else (None, set())
        if dv.value is None and dv.present is None:
            binder.issue(where, "a data value needs `value` or `present`")
        if element is None:
            continue
        codes = binder.option_codes("dataElements", element)
        binder.check_table_codes(used, codes, (*where, "value"))
        binder.check_constant(dv.present, codes, (*where, "present"))
        binder.check_constant(dv.absent, codes, (*where, "absent"))
        values.append(
            BoundDataValue(
                uid=element,
                value_type=str(binder.snapshot.value_type("dataElements", element)),
                option_codes=codes,
                source=dv.source,
                codes=frozenset(_token(t) for t in dv.code),
                where=filter_expr,
                value=value_expr,
                present=dv.present,
                absent=dv.absent,
                compulsory=bool(members.get(element)),
            )
        )
    when, _ = binder.expr(rule.when, (*base, "when"))
    occurred, _ = binder.expr(rule.occurred_at, (*base, "occurred_at"))
    org = [binder.expr(text, (*base, "org_unit", i))[0] for i, text in enumerate(rule.org_unit)]
    if uid is None or when is None or occurred is None or None in org:
        return None
    strategy = str((binder.snapshot.get("programStages", uid) or {}).get("validationStrategy") or "ON_COMPLETE")
    return BoundStage(
        rule.name, uid, when, occurred, tuple(e for e in org if e), dict(rule.status), tuple(values), strategy
    )


def _lookup(snapshot: MetadataSnapshot, collection: str, ref: str) -> str | None:
    """The UID a mapping's reference names: ``code:XYZ`` by code, anything else as a UID."""
    found = snapshot.by_code(collection, ref[5:]) if ref.startswith("code:") else snapshot.get(collection, ref)
    return None if found is None else str(found["id"])


def _org_units(path: Path, relative: str, binder: _Binder) -> OrgUnitTable:
    table_path = path.parent / relative
    table = load_org_unit_table(table_path, binder.issues)
    resolved = []
    for index, entry in enumerate(table.entries):
        uid = _lookup(binder.snapshot, "organisationUnits", entry.org_unit)
        if uid is None:
            message = f"org unit {entry.org_unit} does not exist in DHIS2"
            binder.issues.append(LoadIssue(str(table_path), 1, f"entries[{index}].org_unit", message))
        resolved.append(entry.model_copy(update={"org_unit": uid or entry.org_unit}))
    return table.model_copy(update={"entries": resolved})


def load_tracker(path: Path, snapshot: MetadataSnapshot, tables: dict[str, ConceptTable]) -> BoundTracker:
    """Load a ``dhis2-tracker`` mapping; ``MappingLoadError`` lists every problem."""
    issues: list[LoadIssue] = []
    spec, doc = _parse(path, TrackerMapping, issues)
    if spec is None or doc is None:
        raise MappingLoadError(issues)
    b = _Binder(path, doc, snapshot, tables, issues)
    program = b.ref("programs", spec.program, ("program",))
    tet = b.ref("trackedEntityTypes", spec.tracked_entity_type, ("tracked_entity_type",))
    allowed = (
        set(snapshot.program_attributes(program)) | set(snapshot.tet_attributes(tet))
        if program and tet
        else set()
    )
    attributes: list[BoundAttribute] = []
    for index, rule in enumerate(spec.tracked_entity.attributes):
        where = ("tracked_entity", "attributes", index)
        uid = b.ref("trackedEntityAttributes", rule.attribute, (*where, "attribute"))
        value, used = b.expr(rule.value, (*where, "value"))
        if uid is not None and allowed and uid not in allowed:
            b.issue(
                (*where, "attribute"),
                f"attribute {rule.attribute} belongs to neither the program nor its type",
            )
        if uid is None or value is None:
            continue
        codes = b.option_codes("trackedEntityAttributes", uid)
        b.check_table_codes(used, codes, (*where, "value"))
        attributes.append(
            BoundAttribute(uid, str(snapshot.value_type("trackedEntityAttributes", uid)), codes, value)
        )
    te_org = [
        b.expr(t, ("tracked_entity", "org_unit", i))[0] for i, t in enumerate(spec.tracked_entity.org_unit)
    ]
    en = spec.enrollment
    episode = b.expr(en.episode_of_care, ("enrollment", "episode_of_care"))[0] if en.episode_of_care else None
    enrolled_at, _ = b.expr(en.enrolled_at, ("enrollment", "enrolled_at"))
    en_org = [b.expr(t, ("enrollment", "org_unit", i))[0] for i, t in enumerate(en.org_unit)]
    stages = [_stage(b, rule, i, program) for i, rule in enumerate(spec.stages)]
    org_units = _org_units(path, spec.org_units, b)
    if issues:
        raise MappingLoadError(issues)
    assert program and tet and enrolled_at is not None
    return BoundTracker(
        name=spec.name,
        version=spec.version,
        program=program,
        tracked_entity_type=tet,
        org_units=org_units,
        te_org_unit=tuple(e for e in te_org if e),
        attributes=tuple(attributes),
        program_attributes=frozenset(snapshot.program_attributes(program)),
        episode_filter=episode,
        enrolled_at=enrolled_at,
        enrollment_org_unit=tuple(e for e in en_org if e),
        enrollment_status=dict(en.status),
        stages=tuple(s for s in stages if s),
        mandatory_attributes=frozenset(
            uid
            for found in (snapshot.program_attributes(program), snapshot.tet_attributes(tet))
            for uid, mandatory in found.items()
            if mandatory
        ),
    )


def load_aggregate(path: Path, snapshot: MetadataSnapshot, tables: dict[str, ConceptTable]) -> BoundAggregate:
    """Load a ``dhis2-aggregate`` mapping; ``MappingLoadError`` lists every problem."""
    issues: list[LoadIssue] = []
    spec, doc = _parse(path, AggregateMapping, issues)
    if spec is None or doc is None:
        raise MappingLoadError(issues)
    b = _Binder(path, doc, snapshot, tables, issues)
    data_set = b.ref("dataSets", spec.data_set, ("data_set",))
    members = snapshot.data_set_elements(data_set) if data_set else set()
    aoc = (
        b.ref("categoryOptionCombos", spec.attribute_option_combo, ("attribute_option_combo",))
        if (spec.attribute_option_combo)
        else None
    )
    groups: dict[tuple[str, str], Any] = {}
    for index, rule in enumerate(spec.data_elements):
        where: tuple[str | int, ...] = ("data_elements", index)
        element = b.ref("dataElements", rule.data_element, (*where, "data_element"))
        if element is None:
            continue
        if data_set and element not in members:
            b.issue((*where, "data_element"), f"data element {rule.data_element} is not in the data set")
        valid = snapshot.category_option_combos(element)
        strata: dict[str, str] = {}
        for code, ref in rule.strata.items():
            coc = b.combo(ref, valid, rule.data_element, (*where, "strata", code))
            if coc is not None:
                strata[code] = coc
        total = b.combo(rule.total, valid, rule.data_element, (*where, "total")) if rule.total else None
        stratifier = _token(rule.stratifier) if rule.stratifier else None
        groups[_token(rule.group)] = (
            element,
            str(snapshot.value_type("dataElements", element)),
            stratifier,
            strata,
            total,
        )
    org_units = _org_units(path, spec.org_units, b)
    period_type = str((snapshot.get("dataSets", data_set) or {}).get("periodType", "Monthly"))
    if issues:
        raise MappingLoadError(issues)
    assert data_set is not None
    return BoundAggregate(
        spec.name, spec.measure, data_set, period_type, aoc, spec.complete, org_units, groups
    )


def check_mapping(path: Path, snapshot: MetadataSnapshot, tables: dict[str, ConceptTable]) -> list[LoadIssue]:
    """Every problem of one DHIS2 mapping file against a DHIS2's metadata (empty: fine)."""
    try:
        kind = (read_yaml(path).data or {}).get("kind")
    except YamlSyntaxError as exc:
        return [LoadIssue(str(path), exc.line, "", exc.message)]
    try:
        if kind == "dhis2-tracker":
            load_tracker(path, snapshot, tables)
        elif kind == "dhis2-aggregate":
            load_aggregate(path, snapshot, tables)
        elif kind == "dhis2-org-units":
            load_org_unit_table(path)
        else:
            return [LoadIssue(str(path), 1, "kind", f"not a DHIS2 mapping kind: {kind!r}")]
    except MappingLoadError as exc:
        return list(exc.issues)
    return []
