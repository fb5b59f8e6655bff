"""Retractions: taking back what an edited, voided or deleted source record no longer produces.

Every stored record leaves the list of resources it produced (``RecordOutput``: type, id,
rule, how to take it back), written in the same store transaction as its resources. When
the record comes again, edited, the resources of the old list missing from the new one are
retracted; when the source says the record was deleted or voided (``set.yaml``'s
``retract``), all of them are. A retraction is a new version with a status that voids the
resource (``gateway.fhir.retraction``), a delete, or nothing (``on_retract: keep``), and
travels to destinations like any other change.

A resource several records produce (a household Location, a CHW Practitioner: rules with
``id``) is retracted only when no remaining record produces it. Each record's retractions
get one Provenance per activity (NULLIFY for a status change, DELETE), naming the source
record, in the same transaction.

A record whose mapping names its version (``modified``) is stored only if no later version
of it is: a late retry of an old version would otherwise take back what the newer one
made. Such a record raises ``StaleRecords`` inside the transaction; ingest writes the
others again without it and answers ``stale`` for it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import jsonio
from gateway.errors import StoreError
from gateway.fhir import record_activities, retracted_version
from gateway.store import RecordOutput, StoredResource, StoreTransaction

__all__ = ["OutputChange", "Retracted", "StaleRecords", "apply_output_changes"]


@dataclass(slots=True)
class OutputChange:
    """A record about to be stored (``outputs``: what it produces now) or deleted at its source
    (``outputs`` empty, ``deleted`` true)."""

    source: str  # the configured source name
    system: str  # the source system URI (the mapping set's ``system``)
    record_key: str
    outputs: list[RecordOutput]
    deleted: bool = False
    version: float | None = None  # the record's version at its source (``modified``), if it says
    retracted: list[Retracted] = field(default_factory=list)  # filled by ``apply_output_changes``


class StaleRecords(StoreError):  # noqa: N818 - not a failure: these records are older than what is stored
    """Records of a transaction whose stored version is later than theirs: the transaction is
    undone, to be run again without them (``keys``: (source system, record key) pairs). Like
    ``VersionConflict``, a write the store will not apply; ingest always handles it."""

    def __init__(self, keys: set[tuple[str, str]]) -> None:
        super().__init__(f"{len(keys)} record(s) older than their stored version")
        self.keys = keys


@dataclass(frozen=True, slots=True)
class Retracted:
    """A resource a record took back: ``version`` is the new status version or the tombstone."""

    resource: StoredResource
    activity: str  # NULLIFY or DELETE


def apply_output_changes(
    tx: StoreTransaction,
    changes: Sequence[OutputChange],
    *,
    batched: bool = True,
    legacy: Collection[tuple[str, str]] = (),
) -> None:
    """Record what each record produces now and retract what it no longer does, inside ``tx``.

    Runs after the records' own writes, in the same transaction. All records' new lists are
    written first, so a resource another record of the same transaction produces is kept.
    ``batched`` reads and writes the lists of all records in a few statements per source
    (the same rows as one record at a time, which ``batched=False`` keeps for comparison).
    ``legacy``: (source name, system) pairs whose lists, stored under the source's name before
    lists were kept per system, are first moved under the system (once per source and process).
    """
    for change in changes:
        change.retracted = []  # a transaction retried after a rollback starts afresh
    for source, system in legacy:
        tx.move_record_outputs(source, system)
    _claim_versions(tx, changes)
    if batched and len({(c.system, c.record_key) for c in changes}) == len(changes):
        previous = _swap_outputs(tx, changes)
    else:  # one record at a time (a record twice: its second list replaces its first)
        previous = []
        for change in changes:
            previous.append(tx.record_outputs(change.system, change.record_key))
            tx.set_record_outputs(change.system, change.record_key, change.outputs)
    for change, before in zip(changes, previous, strict=True):
        now = {(o.rtype, o.id) for o in change.outputs}
        for output in before:
            if (output.rtype, output.id) in now or output.on_retract == "keep":
                continue
            if tx.produced_by_others(output.rtype, output.id, change.system, change.record_key):
                continue
            done = _retract(tx, output)
            if done is not None:
                change.retracted.append(done)
        if change.retracted:
            _record_provenance(tx, change)


def _claim_versions(tx: StoreTransaction, changes: Sequence[OutputChange]) -> None:
    """Record the versions of the records that have one; raise ``StaleRecords`` for those older
    than their stored version (a late retry must not roll a record back)."""
    # By system, not source name: two sources of one mapping set (a live push and a CSV backfill)
    # send the same records, which make the same resources.
    by_system: dict[str, dict[str, float]] = {}
    for change in changes:
        if change.version is not None:
            versions = by_system.setdefault(change.system, {})
            # A record twice in one transaction: its later version counts.
            versions[change.record_key] = max(change.version, versions.get(change.record_key, change.version))
    stale = {
        (system, key)
        for system, versions in by_system.items()
        for key in tx.claim_record_versions(system, list(versions.items()))
    }
    if stale:
        raise StaleRecords(stale)


def _swap_outputs(tx: StoreTransaction, changes: Sequence[OutputChange]) -> list[list[RecordOutput]]:
    """Each (distinct) record's previous output list, its new list written in its place.

    Lists are kept per source *system* (the mapping set's), not per configured source: two
    sources of one set (a push and a pull, a backfill) send the same records, which make the
    same resources, so an edit or a deletion through either must see what the other stored.
    """
    by_system: dict[str, list[OutputChange]] = {}
    for change in changes:
        by_system.setdefault(change.system, []).append(change)
    before: dict[tuple[str, str], list[RecordOutput]] = {}
    for system, group in by_system.items():
        found = tx.records_outputs(system, [c.record_key for c in group])
        before.update(((system, key), outputs) for key, outputs in found.items())
        tx.set_records_outputs(system, [(c.record_key, c.outputs) for c in group])
    return [before[(c.system, c.record_key)] for c in changes]


def _retract(tx: StoreTransaction, output: RecordOutput) -> Retracted | None:
    if output.on_retract == "status":
        current = tx.read(output.rtype, output.id)
        if current is None or current.deleted:
            return None
        body: dict[str, Any] = jsonio.loads(current.content)
        voided = retracted_version(body)
        if voided is None:
            return None  # already ended (a clinic completed the Task): left as it is
        return Retracted(tx.update(voided).resource, "NULLIFY")
    deleted = tx.delete(output.rtype, output.id)
    return Retracted(deleted, "DELETE") if deleted is not None else None


def _record_provenance(tx: StoreTransaction, change: OutputChange) -> None:
    why = "deleted or voided at the source" if change.deleted else "an edit of the source record no longer produces it"
    source = {"identifier": {"system": f"{change.system}:record", "value": change.record_key}}
    record_activities(
        tx, [(done.resource, done.activity) for done in change.retracted], {"display": change.system},
        reason=[{"text": why}], entity=[{"role": "source", "what": source}],
    )  # fmt: skip
