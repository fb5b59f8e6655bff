"""Mapping coverage over the golden inputs: source fields no rule reads, rules that never fire.

Reads are taken from the compiled expressions: a simple path reads itself and everything
below it (``form.tb_symptoms | entries`` reads every symptom); ``%item.x`` inside a repeating
rule reads ``<for_each path>.x``; inside FHIRPath functions the paths are approximate.
Source fields are the leaf paths of the golden input records, list positions removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.mapping.engine import CompiledMapping, CompiledRule, MappingSet
from gateway.mapping.errors import MappingError
from gateway.mapping.expressions import Expression
from gateway.mapping.golden import find_cases
from gateway.mapping.inputs import InputError, read_records
from gateway.mapping.loader import LoadedMappings
from gateway.mapping.yamlfile import NodePath

__all__ = ["MappingCoverage", "mapping_coverage"]

FieldPath = tuple[str, ...]


@dataclass(slots=True)
class MappingCoverage:
    """Coverage of one mapping over the golden records it matched."""

    mapping: str
    records: int = 0
    fields: int = 0
    unread: list[str] = field(default_factory=list)
    rules: int = 0
    never_fired: list[str] = field(default_factory=list)


def _leaves(value: Any, prefix: FieldPath = ()) -> Iterator[FieldPath]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*prefix, str(key)))
    elif isinstance(value, list) and value:
        for item in value:
            yield from _leaves(item, prefix)
    elif prefix and not isinstance(value, dict | list):  # an empty container holds no answer
        yield prefix


def _repeat_bases(rule: CompiledRule) -> dict[str, list[FieldPath]]:
    """The record paths ``%item`` (and each named level) of a repeating rule stand for."""
    levels = rule.levels
    if not levels and rule.for_each is not None:
        levels = (("item", rule.for_each),)
    bases: dict[str, list[FieldPath]] = {}
    for name, items in levels:
        paths: list[FieldPath] = []
        for var, keys in items.reads:
            if var in (None, "context"):
                paths.append(keys)
            else:
                paths.extend((*base, *keys) for base in bases.get(var, []))
        bases[name] = bases["item"] = paths
    return bases


def _read_paths(mapping: CompiledMapping, expressions: list[tuple[NodePath, Expression]]) -> set[FieldPath]:
    repeat_base = {index: _repeat_bases(rule) for index, rule in enumerate(mapping.rules)}
    reads: set[FieldPath] = set()
    for node_path, expression in expressions:
        for variable, keys in expression.reads:
            if variable in (None, "context"):
                reads.add(keys)
            elif len(node_path) > 1 and node_path[0] == "rules" and isinstance(node_path[1], int):
                for base in repeat_base[node_path[1]].get(variable, []):
                    reads.add((*base, *keys))
    reads.add(())  # nothing; keeps the set non-empty for the prefix test
    return reads


def _is_read(path: FieldPath, reads: set[FieldPath]) -> bool:
    return any(path[:length] in reads for length in range(1, len(path) + 1))


def mapping_coverage(loaded: LoadedMappings, mapping_set: MappingSet) -> list[MappingCoverage]:
    """Coverage of every mapping of a set, over the set's golden inputs."""
    records_by_mapping: dict[str, list[Any]] = {mapping.name: [] for mapping in mapping_set.mappings}
    for case in find_cases(mapping_set):
        try:
            records, _ = read_records(case.input_path)
        except (InputError, OSError):
            continue
        for record in records:
            try:
                records_by_mapping[mapping_set.select(record).name].append(record)
            except MappingError:
                continue
    report: list[MappingCoverage] = []
    for mapping in mapping_set.mappings:
        records = records_by_mapping[mapping.name]
        coverage = MappingCoverage(mapping.tag, records=len(records), rules=len(mapping.rules))
        reads = _read_paths(mapping, loaded.expressions.get(mapping.tag, []))
        for retract in (mapping_set.retract_when, mapping_set.retract_id, mapping_set.retract_modified):
            # the set's own reads: the fields that tell a deleted or voided record (set.yaml retract)
            if retract is not None:
                reads.update(keys for variable, keys in retract.reads if variable in (None, "context"))
        fields: set[FieldPath] = set()
        fired: set[str] = set()
        for record in records:
            fields.update(_leaves(record))
            try:
                mapping.map_traced(record, fired)
            except MappingError:
                continue
        coverage.fields = len(fields)
        coverage.unread = sorted(".".join(path) for path in fields if not _is_read(path, reads))
        coverage.never_fired = [rule.name for rule in mapping.rules if rule.name not in fired]
        report.append(coverage)
    return report
