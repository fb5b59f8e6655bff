"""Running compiled mappings: one source record in, one FHIR transaction Bundle out.

``MappingSet.map_record(record)`` picks the mapping whose ``match`` is true and runs it:

1. evaluate ``record_id`` and the ``let`` values, in file order;
2. decide which single (non-repeating) rules fire and give each its deterministic id, so
   any rule can refer to another as ``%name`` whatever their order; a repeating rule named
   from outside its items gets the list of its per-item References the same way (and,
   inside a repeating rule, ``%sibling`` is the sibling's Reference for the same item);
3. run the rules in file order (repeating rules once per ``for_each`` item);
4. stamp every resource with ``meta.source`` (the source system) and a ``meta.tag`` naming
   the mapping and its version; add the record identifier to record-scoped resources;
5. add a Provenance whose entity is the source record and whose targets are the resources.

Every entry is a ``PUT Type/<deterministic id>``, so resubmitting a record updates the same
resources. The output is plain JSON-ready dicts: validation happens once, in the store path.
Nothing here reads the clock, so the same record always gives the same Bundle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from gateway.fhir import can_retract_by_status
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.expressions import CompileError, Expression, split_pipeline
from gateway.mapping.fastpath import walk
from gateway.mapping.ids import entity_id, record_key
from gateway.mapping.outbound import OutboundMapping
from gateway.mapping.rules import DEFAULTS_KEY, RuleProgram
from gateway.mapping.templates import MISSING, Builder, copier
from gateway.mapping.unmatched import unmatched_error
from gateway.mapping.values import to_boolean
from gateway.mapping.versions import version_number
from gateway.search import token_key
from gateway.store import RecordOutput

__all__ = ["MAPPING_TAG_SYSTEM", "CompiledMapping", "CompiledRule", "MappingSet"]

#: ``meta.tag`` system naming the mapping (``code`` = ``name@version``) on every resource.
MAPPING_TAG_SYSTEM = "urn:chw-gateway:mapping"
#: Upper bound of ``for_each`` items per rule: a malformed record must not explode a Bundle.
MAX_REPEAT = 1000

Env = dict[str, list[Any]]


def truthy(values: list[Any], path: str) -> bool:
    """A condition's result: true, false, yes/no text; nothing counts as false."""
    if not values:
        return False
    if len(values) > 1:
        raise MappingError(path, f"gives {len(values)} values; a condition needs one", code="value")
    value = values[0]
    if type(value) is bool:
        return value
    if type(value) is str and not value.strip():
        return False
    return to_boolean(value, path)


def _single_text(values: list[Any], path: str, what: str) -> str:
    kept = [value for value in values if value is not None and not (type(value) is str and not value.strip())]
    if len(kept) != 1 or type(kept[0]) in (dict, list, bool):
        detail = "nothing" if not kept else quote(kept if len(kept) > 1 else kept[0])
        raise MappingError(path, f"{what} must be one text or number, got {detail}", code="required")
    value = kept[0]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if _CONTROL.search(text):
        # An id is kept as text (PostgreSQL's holds no NUL) and shown to operators: a control
        # character in one is a broken record, held like any other.
        raise MappingError(path, f"{what} holds a control character", code="value")
    return text


#: Control characters: none belongs in an id (FHIR strings allow tab, CR and LF, ids not even those).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True)
class CompiledRule:
    """A rule ready to run: conditions, repetition, identity and its resource factory."""

    name: str
    program: RuleProgram
    when: Expression | None = None
    for_each: Expression | None = None  # the (outermost) items: the rule repeats when set
    #: a nested ``for_each``: ``(level name, items expression)``, outermost first
    levels: tuple[tuple[str, Expression], ...] = ()
    key: Expression | None = None
    entity: Expression | None = None
    identifier_shapes: dict[str, str | None] = field(default_factory=dict)
    on_retract: str | None = None  # entered-in-error | delete | keep; None: by resource type
    on_update: str = "replace"  # or merge: keep the stored elements the record leaves out
    lets: list[tuple[str, Builder]] = field(default_factory=list)  # per item, see %item
    #: repeating rules over the same ``for_each``: ``%name`` is their resource for this item
    sibling_names: tuple[str, ...] = ()
    siblings: list[CompiledRule] = field(default_factory=list)

    def retract_mode(self, rtype: str) -> str:
        """How to take back a ``rtype`` this rule made: ``status``, ``delete`` or ``keep``."""
        if self.on_retract in ("delete", "keep"):
            return self.on_retract
        return "status" if can_retract_by_status(rtype) else "delete"

    def ids(self, system: str, key: str) -> dict[str, str]:
        """Deterministic ids of every resource type this rule makes, for one key."""
        types = self.program.resource_types
        if len(types) == 1:
            return {types[0]: entity_id(system, types[0], key)}
        return {rtype: entity_id(system, rtype, key) for rtype in types}


@dataclass(slots=True)
class CompiledMapping:
    """One mapping file, compiled: call ``map`` with a record (a dict)."""

    name: str
    version: str
    set_name: str
    system: str
    file: str
    record_id: Expression
    match: Expression | None
    lets: list[tuple[str, Builder]]
    defaults: list[tuple[str, Builder]]
    rules: list[CompiledRule]
    recorded: Builder
    agent: Builder | None
    description: str = ""
    recorded_path: str = "provenance.recorded"  # names the record field in errors
    modified: Expression | None = None  # reads the record's version at its source
    #: line in ``file`` of each rule, ``let <name>``, ``defaults.<name>`` and ``provenance``
    lines: dict[str, int] = field(default_factory=dict)
    #: repeating rules referred to from outside their own items: ``%name`` is then every
    #: item's Reference, in item order (worked out before the rules run)
    collected: frozenset[str] = frozenset()
    _meta: Callable[[], dict[str, Any]] = field(init=False, repr=False, compare=False)
    _rules: dict[str, CompiledRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rules = {rule.name: rule for rule in self.rules}
        for rule in self.rules:
            rule.siblings = [self._rules[name] for name in rule.sibling_names]
        self._meta = copier(
            {"source": self.system, "tag": [{"system": MAPPING_TAG_SYSTEM, "code": self.tag}]}
        )

    def merged_outputs(self, outputs: list[RecordOutput]) -> set[tuple[str, str]]:
        """The (type, id) of ``outputs`` made by rules whose resources merge into the stored version."""
        return {(o.rtype, o.id) for o in outputs
                if o.rule in self._rules and self._rules[o.rule].on_update == "merge"}  # fmt: skip

    def where(self, part: str) -> str:
        """``set: file:line`` of a rule (or let, default, provenance), for run-time errors: the file
        by its name in the set's folder, so a golden file's expected message does not depend on the
        directory the tests were run from (nor a quarantined record's on where the gateway runs)."""
        line = self.lines.get(part)
        return f"{self.set_name}: {PurePath(self.file).name}" + (f":{line}" if line else "")

    @property
    def tag(self) -> str:
        """``name@version``, as written in ``meta.tag`` and Provenance.policy."""
        return f"{self.name}@{self.version}"

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether this mapping handles the record (``match`` true, or no ``match``)."""
        if self.match is None:
            return True
        try:
            return self.match.run(record, {"system": [self.system]}) == [True]
        except MappingError:
            return False

    def map(self, record: dict[str, Any]) -> dict[str, Any]:
        """The transaction Bundle for one record; raises ``MappingError``."""
        return self.map_traced(record, None)

    def map_traced(
        self, record: dict[str, Any], fired: set[str] | None, outputs: list[RecordOutput] | None = None
    ) -> dict[str, Any]:
        """``map``, also adding the name of every rule that produced something to ``fired``, and
        what the record produced (for retractions) to ``outputs``."""
        if type(record) is not dict:
            raise MappingError("$", "a record must be a JSON object", code="structure", mapping=self.name)
        try:
            record_id = _single_text(self.record_id.run(record, {}), self.record_id.text, "the record id")
        except MappingError as exc:
            exc.mapping = self.name
            raise
        env: Env = {
            "record_id": [record_id],
            "system": [self.system],
            "mapping": [self.name],
            "version": [self.version],
        }
        for name, builder in self.lets:
            try:
                value = builder(record, env)
            except MappingError as exc:
                raise exc.in_rule(f"let {name}", self.name, self.where(f"let {name}")) from None
            env[name] = [] if value is MISSING else value if type(value) is list else [value]
        planned: list[tuple[CompiledRule, dict[str, str] | None]] = []
        for rule in self.rules:
            if rule.for_each is not None:
                planned.append((rule, None))
                continue
            try:
                ids = self._plan_single(rule, record, env, record_id)
            except MappingError as exc:
                raise exc.in_rule(rule.name, self.name, self.where(rule.name)) from None
            if ids is None:
                env[rule.name] = []
            else:
                primary = rule.program.resource_types[0]
                env[rule.name] = [{"reference": f"{primary}/{ids[primary]}"}]
                planned.append((rule, ids))
        for rule in self.rules:
            if rule.name in self.collected:
                try:
                    env[rule.name] = self._references(rule, record, env, record_id)
                except MappingError as exc:
                    raise exc.in_rule(rule.name, self.name, self.where(rule.name)) from None
        values: dict[str, Any] = {}
        for name, builder in self.defaults:
            try:
                values[name] = builder(record, env)
            except MappingError as exc:
                raise exc.in_rule(f"defaults.{name}", self.name, self.where(f"defaults.{name}")) from None
        env[DEFAULTS_KEY] = [values]
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        for rule, ids in planned:
            try:
                if ids is not None:
                    made = rule.program.factory(record, env, ids)
                    self._add(entries, rule, made, record_id, scoped=rule.entity is None)
                else:
                    self._run_repeat(entries, rule, record, env, record_id)
            except MappingError as exc:
                raise exc.in_rule(rule.name, self.name, self.where(rule.name)) from None
            if fired is not None and made_any(entries, rule.name):
                fired.add(rule.name)
        return self._bundle(entries, record, env, record_id, outputs)

    def _plan_single(
        self, rule: CompiledRule, record: Any, env: Env, record_id: str
    ) -> dict[str, str] | None:
        if rule.when is not None and not truthy(rule.when.run(record, env), rule.when.text):
            return None
        if rule.entity is not None:
            key = _single_text(rule.entity.run(record, env), rule.entity.text, "the entity id")
        else:
            key = record_key(record_id, rule.name)
        return rule.ids(self.system, key)

    def _run_repeat(
        self,
        entries: dict[tuple[str, str], dict[str, Any]],
        rule: CompiledRule,
        record: Any,
        env: Env,
        record_id: str,
    ) -> None:
        items, nested = self._items(rule, record, env)
        for index, item in enumerate(items):
            local = dict(env)
            if nested is None:
                local["item"] = [item]
                local["index"] = [index]
            else:
                local.update(nested[index])
            try:
                ids = self._item_ids(rule, record, local, record_id)
                if ids is None:
                    continue
                for sibling in rule.siblings:
                    fresh = {**env, "item": [item], "index": [index]} if nested is None else {**env, **nested[index]}
                    try:
                        other = self._item_ids(sibling, record, fresh, record_id)
                    except MappingError as exc:
                        raise exc.in_rule(sibling.name, self.name, self.where(sibling.name)) from None
                    primary = sibling.program.resource_types[0]
                    local[sibling.name] = [] if other is None else [{"reference": f"{primary}/{other[primary]}"}]
                made = rule.program.factory(record, local, ids)
            except MappingError as exc:
                raise _at_item(exc, rule, index, local) from None
            self._add(entries, rule, made, record_id, scoped=rule.entity is None)

    def _items(self, rule: CompiledRule, record: Any, env: Env) -> tuple[list[Any], list[Env] | None]:
        """The items, and for a nested ``for_each`` the variables each adds (each level's item
        and position, ``%item``/``%index`` the innermost, the default ``%key`` the positions
        joined by ``.``); a plain ``for_each`` sets only ``%item`` and ``%index``."""
        if rule.levels:
            nested = _nested_items(rule.levels, record, env)
            return [extra["item"][0] for extra in nested], nested
        assert rule.for_each is not None
        items = _present(rule.for_each, record, env)
        if not items:
            _check_not_linked_only(rule.for_each, record)
        _limit(len(items), rule.for_each.text)
        return items, None

    def _references(self, rule: CompiledRule, record: Any, env: Env, record_id: str) -> list[Any]:
        """A repeating rule's Reference for each item it fires for, in item order."""
        primary = rule.program.resource_types[0]
        references: list[Any] = []
        items, nested = self._items(rule, record, env)
        for index, item in enumerate(items):
            local = {**env, "item": [item], "index": [index]} if nested is None else {**env, **nested[index]}
            try:
                ids = self._item_ids(rule, record, local, record_id)
            except MappingError as exc:
                raise _at_item(exc, rule, index, local) from None
            if ids is not None:
                references.append({"reference": f"{primary}/{ids[primary]}"})
        return references

    def _item_ids(self, rule: CompiledRule, record: Any, local: Env, record_id: str) -> dict[str, str] | None:
        """Evaluate a repeating rule's lets, ``when``, ``key`` and ``id`` for one item (into
        ``local``); its resource ids, or None when it does not fire for the item."""
        for name, builder in rule.lets:
            value = builder(record, local)
            local[name] = [] if value is MISSING else value if type(value) is list else [value]
        if rule.when is not None and not truthy(rule.when.run(record, local), rule.when.text):
            return None
        if rule.key is not None:
            repeat_key = _single_text(rule.key.run(record, local), rule.key.text, "the repeat key")
        elif "key" in local:
            repeat_key = local["key"][0]  # a nested for_each's positions
        else:
            repeat_key = str(local["index"][0])
        local["key"] = [repeat_key]
        if rule.entity is not None:
            key = _single_text(rule.entity.run(record, local), rule.entity.text, "the entity id")
        else:
            key = record_key(record_id, rule.name, repeat_key)
        return rule.ids(self.system, key)

    def _add(
        self,
        entries: dict[tuple[str, str], dict[str, Any]],
        rule: CompiledRule,
        made: list[dict[str, Any]],
        record_id: str,
        *,
        scoped: bool,
    ) -> None:
        for made_resource in made:
            rtype, rid = made_resource["resourceType"], made_resource["id"]
            resource: dict[str, Any] = {"resourceType": rtype, "id": rid, "meta": self._meta()}
            resource.update(made_resource)
            if scoped:
                shape = rule.identifier_shapes.get(rtype)
                own = {"system": f"{self.system}:record", "value": record_id}
                if shape == "list":
                    current = resource.get("identifier")
                    if type(current) is list:
                        current.append(own)
                    elif current is None:
                        resource["identifier"] = [own]
                elif shape == "single" and "identifier" not in resource:
                    resource["identifier"] = own
            resource["_rule"] = rule.name
            previous = entries.get((rtype, rid))
            if previous is not None:
                if {k: v for k, v in previous.items() if k != "_rule"} == {
                    k: v for k, v in resource.items() if k != "_rule"
                }:
                    continue
                raise MappingError(
                    rule.name,
                    f"makes {rtype} with a key already used by rule {previous['_rule']}",
                    code="duplicate",
                )
            entries[(rtype, rid)] = resource

    def _bundle(
        self,
        entries: dict[tuple[str, str], dict[str, Any]],
        record: Any,
        env: Env,
        record_id: str,
        outputs: list[RecordOutput] | None,
    ) -> dict[str, Any]:
        bundle_entries: list[dict[str, Any]] = []
        targets: list[dict[str, str]] = []
        for (rtype, rid), resource in entries.items():
            rule_name = resource.pop("_rule")
            if outputs is not None:
                outputs.append(RecordOutput(rtype, rid, rule_name, self._rules[rule_name].retract_mode(rtype)))
            bundle_entries.append(
                {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
            )
            targets.append({"reference": f"{rtype}/{rid}"})
        if bundle_entries:
            provenance = self._provenance(targets, record, env, record_id)
            bundle_entries.append(
                {
                    "resource": provenance,
                    "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"},
                }
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": bundle_entries}

    def _provenance(
        self, targets: list[dict[str, str]], record: Any, env: Env, record_id: str
    ) -> dict[str, Any]:
        try:
            recorded = self.recorded(record, env)
            agent = self.agent(record, env) if self.agent is not None else MISSING
        except MappingError as exc:
            raise exc.in_rule("provenance", self.name, self.where("provenance")) from None
        if recorded is MISSING or type(recorded) is not str:
            raise MappingError(
                self.recorded_path,
                "the record has no time for Provenance.recorded",
                code="required",
                mapping=self.name,
            )
        if len(recorded) == 10:
            recorded += "T00:00:00Z"
        if agent is MISSING:
            agent = {"display": self.system}
        return {
            "resourceType": "Provenance",
            "id": entity_id(self.system, "Provenance", record_id),
            "meta": self._meta(),
            "target": targets,
            "recorded": recorded,
            "policy": [f"{MAPPING_TAG_SYSTEM}:{self.name}:{self.version}"],
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "author",
                            }
                        ]
                    },
                    "who": agent,
                }
            ],
            "entity": [
                {
                    "role": "source",
                    "what": {
                        "identifier": {"system": f"{self.system}:record", "value": record_id},
                        "display": f"{self.set_name} record mapped by {self.tag}",
                    },
                }
            ],
        }


def _present(items: Expression, record: Any, env: Env) -> list[Any]:
    return [item for item in items.run(record, env) if item is not None and item != ""]


#: ODK Central's OData: a repeat group not expanded inline is this key beside where its rows would be.
_NAVIGATION_LINK = "@odata.navigationLink"


def _check_not_linked_only(items: Expression, record: Any) -> None:
    """Refuse a record whose repeat (a plain ``for_each`` path) came as an OData navigation link
    only: ODK Central sends the rows inline only when asked with ``$expand=*``, and mapping the
    row as it came would store the record without any of its repeat's items."""
    if not _PLAIN_PATH.match(items.text) or len(items.reads) != 1 or items.reads[0][0] is not None:
        return
    keys = items.reads[0][1]
    if not keys:
        return
    for parent in walk([record], keys[:-1]) if len(keys) > 1 else [record]:
        if type(parent) is dict and keys[-1] not in parent and parent.get(keys[-1] + _NAVIGATION_LINK):
            raise MappingError(
                items.text,
                f"the repeat group came as {items.text}{_NAVIGATION_LINK} only, without its rows: "
                "fetch the submissions with $expand=* (ODK Central OData) so repeats come inline",
                code="incomplete",
            )


def _limit(count: int, text: str) -> None:
    if count > MAX_REPEAT:
        raise MappingError(text, f"{count} items; at most {MAX_REPEAT}", code="too-costly")


_PLAIN_PATH = re.compile(r"^(?:[A-Za-z_][\w]*|`[^`]+`)(?:\.(?:[A-Za-z_][\w]*|`[^`]+`))*$")


def _at_item(exc: MappingError, rule: CompiledRule, index: int, local: Env) -> MappingError:
    """``exc`` raised while mapping one item of a repeating rule, told which item: its place in
    the record (``children[1]``; a nested ``for_each`` names each level's position) and its key."""
    assert rule.for_each is not None
    if rule.levels:
        (outer, items), *inner = rule.levels
        first = items.text if _PLAIN_PATH.match(items.text) else f"%{outer}"
        place = " / ".join([f"{first}[{local[f'{outer}_index'][0]}]",
                            *(f"%{name}[{local[f'{name}_index'][0]}]" for name, _ in inner)])  # fmt: skip
    else:
        place = f"{rule.for_each.text}[{index}]"
    key = local.get("key") if rule.key is not None or rule.entity is not None else None
    label = f"{place} (key {key[0]})" if key else place
    field = None
    if not rule.levels and _PLAIN_PATH.match(rule.for_each.text) and exc.path.startswith("%item."):
        field = f"{place}{exc.path[len('%item'):]}"  # the same field, as a path into the record
    elif not rule.levels:
        field = _converted_item_field(rule.for_each.text, exc.path, local)
    return exc.at_item(label, field)


#: Converters whose items are pieces of one text field (``danger_signs | split``).
_PIECE_CONVERTERS = frozenset({"split", "trim", "lower", "upper", "strip_prefix"})


def _converted_item_field(items: str, path: str, local: Env) -> str | None:
    """The record field an item of ``for_each: "<path> | converters"`` came from, or None: the
    field itself for a piece of its text (``| split``), ``<path>.<question>`` for an ``| entries``
    item's ``%item.key`` or ``%item.value``."""
    try:
        source, steps = split_pipeline(items)
    except CompileError:
        return None
    if not steps or not _PLAIN_PATH.match(source):
        return None
    names = [name for name, _ in steps]
    if names == ["entries"] and path in ("%item.key", "%item.value"):
        item = (local.get("item") or [None])[0]
        key = item.get("key") if type(item) is dict else None
        if type(key) is str and key:
            return f"{source}.{key}" if _PLAIN_PATH.match(key) else f"{source}.`{key}`"
        return None
    if path == "%item" and all(name in _PIECE_CONVERTERS for name in names):
        return source
    return None


def _nested_items(levels: tuple[tuple[str, Expression], ...], record: Any, env: Env) -> list[Env]:
    """Walk the levels depth first: each level's items are read with the outer levels' variables set."""
    found: list[Env] = [{}]
    for name, items in levels:
        deeper: list[Env] = []
        for outer in found:
            scope = {**env, **outer}
            for index, item in enumerate(_present(items, record, scope)):
                position = f"{outer['key'][0]}.{index}" if outer else str(index)
                deeper.append({**outer, name: [item], f"{name}_index": [index], "item": [item],
                               "index": [index], "key": [position]})
            _limit(len(deeper), items.text)
        found = deeper
    return found


def _version(modified: Expression | None, record: Any) -> float | None:
    """What a ``modified`` expression reads from ``record``, as a version number (None: none)."""
    return None if modified is None else version_number(modified.run(record, {}), modified.text)


def made_any(entries: dict[tuple[str, str], dict[str, Any]], rule: str) -> bool:
    """Whether any entry so far came from ``rule``."""
    return any(resource.get("_rule") == rule for resource in entries.values())


@dataclass(slots=True)
class MappingSet:
    """The mappings one source uses (``mappings/<set>/``): ``map_record`` is the engine."""

    name: str
    system: str
    mappings: list[CompiledMapping]
    title: str = ""
    folder: str = ""
    retract_when: Expression | None = None  # true for a record the source deleted or voided
    retract_id: Expression | None = None  # reads such a record's id
    retract_modified: Expression | None = None  # reads such a record's version
    outbound: list[OutboundMapping] = field(default_factory=list)  # referral outcomes back to the source app

    def retracted_key(self, record: Any) -> str | None:
        """The id of the record if the source says it was deleted or voided (``set.yaml``'s
        ``retract``), else None; raises ``MappingError`` if its id cannot be read."""
        if self.retract_when is None or self.retract_id is None or type(record) is not dict:
            return None
        try:
            if self.retract_when.run(record, {"system": [self.system]}) != [True]:
                return None
        except MappingError:
            return None
        return stored_record_key(_single_text(self.retract_id.run(record, {}), self.retract_id.text, "the record id"))

    def record_version(self, record: Any, mapping: CompiledMapping) -> float | None:
        """The record's version as ``mapping``'s ``modified`` reads it (None: it has none);
        raises ``MappingError`` for a value that is no version."""
        return _version(mapping.modified, record)

    def retracted_version(self, record: Any) -> float | None:
        """The version of a deleted or voided record (``retract.modified``), or None."""
        return _version(self.retract_modified, record)

    def map_outputs(
        self, record: Any, mapping: CompiledMapping | None = None
    ) -> tuple[dict[str, Any], list[RecordOutput]]:
        """``map_record``, with what the record produced (for retractions); ``mapping`` is the
        record's ``select`` if the caller already made it (ingest selects once per record)."""
        outputs: list[RecordOutput] = []
        bundle = (mapping or self.select(record)).map_traced(record, None, outputs)
        return bundle, outputs

    def selected(self, record: Any) -> CompiledMapping | None:
        """``select``, or None when no mapping accepts the record (mapping it then says why)."""
        try:
            return self.select(record)
        except MappingError:
            return None

    def select(self, record: Any) -> CompiledMapping:
        """The first mapping whose ``match`` accepts the record."""
        if type(record) is not dict:
            raise MappingError("$", "a record must be a JSON object", code="structure")
        for mapping in self.mappings:
            if mapping.matches(record):
                return mapping
        raise unmatched_error(self.name, self.mappings, record)

    def map_record(self, record: Any) -> dict[str, Any]:
        """One source record → one FHIR transaction Bundle (a dict); raises ``MappingError``."""
        return self.select(record).map(record)

    def record_key(self, record: Any, mapping: CompiledMapping | None = None) -> str | None:
        """The record's own id as its mapping (``mapping``, else its ``select``) reads it; for a
        record no mapping accepts, as the first of the set's mappings that can read one does (its
        quarantine entry then names the record, ``doc._id``, rather than none); else None."""
        if mapping is None:
            try:
                mapping = self.select(record)
            except MappingError:
                return next(filter(None, (_key_of(record, m) for m in self.mappings)), None)
        return _key_of(record, mapping)


def _key_of(record: Any, mapping: CompiledMapping) -> str | None:
    try:
        return stored_record_key(_single_text(mapping.record_id.run(record, {}), mapping.record_id.text,
                                              "the record id"))
    except MappingError:
        return None


def stored_record_key(record_id: str) -> str:
    """A source record's id as the gateway keeps it (what it produced, its version, its quarantine
    entry, the message log): as it is, or past 1000 bytes its start and a SHA-256 of the whole
    (``gateway.search.keys``), so a source's 9 KB id is stored on PostgreSQL too (B-tree entries
    hold ~2.7 KB) and still names one record."""
    key = token_key(record_id)
    assert key is not None
    return key
