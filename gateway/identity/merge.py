"""Merge and unmerge: an administrator decides two source Patients are one person, or takes that back.

A merge keeps both records addressable: the loser gets a kept ``replaced-by`` link to the
survivor ("this record must no longer be used", FHIR R4), the survivor a kept ``replaces``
link to the loser, and the golden records of both clusters become one (the survivor's golden
stays, the other is retired). Both links name the merge's Provenance, whose ``entity`` lists
every version the merge replaced; an unmerge writes exactly those versions back (and deletes
what the merge created), so every record's content is as it was before the merge. A record
changed since (a source's edit, a write-back) keeps that change and loses only the merge's
links, one deleted since stays deleted, and the golden records are redone from what is there.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway import jsonio
from gateway.identity.decision import Decision, conflict, not_found, record
from gateway.identity.golden import Writes, kept_link, refresh
from gateway.identity.rules import Rules
from gateway.store import Store, StoreTransaction, is_golden, is_kept_link, linked_ids

_NOTE = "merge Provenance/"
JsonObject = dict[str, Any]


def merge_records(store: Store, rules: Rules, survivor: str, loser: str, client: str) -> Decision:
    """Merge ``loser`` into ``survivor`` (two source Patients) and record it."""
    if survivor == loser:
        raise conflict("a Patient cannot be merged into itself")
    pid = str(uuid.uuid4())
    with store.transaction() as tx:
        writes = Writes(tx, store)
        kept, gone = _mergeable(writes, survivor), _mergeable(writes, loser)
        note = f"{_NOTE}{pid}"
        writes.write({**gone, "link": [*(gone.get("link") or []), kept_link("replaced-by", survivor, note)]})
        writes.write({**kept, "link": [*(kept.get("link") or []), kept_link("replaces", loser, note)]})
        golden = linked_ids(kept, "refer")
        refresh(writes, rules, [survivor, loser], prefer=golden[0] if golden else None)
        return record(writes, "merge", client, [survivor, loser], pid)


def _mergeable(writes: Writes, rid: str) -> dict[str, Any]:
    """A live source Patient not merged away already."""
    body = writes.read("Patient", rid)
    if body is None:
        raise not_found(f"Patient/{rid}")
    if is_golden(body):
        raise conflict(f"Patient/{rid} is a golden record: merge the source records it links to")
    if linked_ids(body, "replaced-by"):
        raise conflict(f"Patient/{rid} was merged into Patient/{linked_ids(body, 'replaced-by')[0]} already")
    return body


def unmerge_record(store: Store, rules: Rules, loser: str, client: str) -> Decision:
    """Undo the merge of ``loser``: every record it wrote goes back to its version before the merge."""
    current = store.read("Patient", loser)
    if current is None or current.deleted:
        raise not_found(f"Patient/{loser}")
    body = jsonio.loads(current.content)
    notes = [ext.get("valueString", "") for link in body.get("link") or []
             if is_kept_link(link) and link.get("type") == "replaced-by" for ext in link.get("extension") or []]
    merge_id = next((n.removeprefix(_NOTE) for n in notes if n.startswith(_NOTE)), None)
    if merge_id is None:
        raise conflict(f"Patient/{loser} is not merged into another record")
    provenance = store.read("Provenance", merge_id)
    if provenance is None or provenance.deleted:
        raise not_found(f"Provenance/{merge_id} (the merge of Patient/{loser})")
    merged = jsonio.loads(provenance.content)
    wrote = {ref: int(version) for target in merged.get("target") or []
             for ref, _, version in [str(target["reference"]).partition("/_history/")]}  # fmt: skip
    before: dict[str, JsonObject] = {}
    for entity in merged.get("entity") or []:
        rtype, rid, _, version = str(entity["what"]["reference"]).split("/")
        old = store.vread(rtype, rid, int(version))
        if old is None or old.deleted:
            raise conflict(f"{rtype}/{rid}/_history/{version} (before the merge) cannot be read back")
        before[f"{rtype}/{rid}"] = jsonio.loads(old.content)
    created = [ref for ref in wrote if ref not in before]
    note = f"{_NOTE}{merge_id}"
    with store.transaction() as tx:
        writes = Writes(tx, store)
        # What nobody changed since the merge goes back to its version before it; what a source (or
        # the matcher) changed since keeps that change and loses only the merge's links, and a record
        # deleted since stays deleted: the golden records are then redone from what is there now.
        redo = False
        for ref, old_body in before.items():
            if _untouched(tx, ref, wrote):
                writes.write(old_body)
                continue
            redo = True
            now = writes.read(*ref.split("/"))
            if now is not None and not is_golden(now):
                writes.write({**now, "link": [link for link in now.get("link") or [] if not _of_merge(link, note)]})
        for ref in created:
            if _untouched(tx, ref, wrote):
                writes.delete(*ref.split("/"))
            else:
                redo = True
        patients = sorted({r["id"] for r in before.values() if r["resourceType"] == "Patient" and not is_golden(r)})
        if redo:
            refresh(writes, rules, [pid for pid in patients if writes.read("Patient", pid) is not None])
        return record(writes, "unmerge", client, patients)


def _untouched(tx: StoreTransaction, ref: str, wrote: dict[str, int]) -> bool:
    """Whether ``ref`` is still the version the merge wrote."""
    rtype, _, rid = ref.partition("/")
    current = tx.read(rtype, rid)
    return current is not None and not current.deleted and current.version == wrote.get(ref)


def _of_merge(link: Any, note: str) -> bool:
    """Whether a ``Patient.link`` is one the merge noted as ``note`` added."""
    return is_kept_link(link) and any(ext.get("valueString") == note for ext in link.get("extension") or [])
