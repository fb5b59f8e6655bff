"""Merge and unmerge: an administrator decides two source Patients are one person, or takes that back.

A merge keeps both records addressable: the loser gets a kept ``replaced-by`` link to the
survivor ("this record must no longer be used", FHIR R4), the survivor a kept ``replaces``
link to the loser, and the golden records of both clusters become one (the survivor's golden
stays, the other is retired). Both links name the merge's Provenance, whose ``entity`` lists
every version the merge replaced; an unmerge writes exactly those versions back (and deletes
what the merge created), so every record's content is as it was before the merge.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gateway.identity.decision import Decision, conflict, not_found, record
from gateway.identity.golden import Writes, kept_link, refresh
from gateway.identity.rules import Rules
from gateway.store import Store, is_golden, is_kept_link, linked_ids

_NOTE = "merge Provenance/"


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
    body = orjson.loads(current.content)
    notes = [ext.get("valueString", "") for link in body.get("link") or []
             if is_kept_link(link) and link.get("type") == "replaced-by" for ext in link.get("extension") or []]
    merge_id = next((n.removeprefix(_NOTE) for n in notes if n.startswith(_NOTE)), None)
    if merge_id is None:
        raise conflict(f"Patient/{loser} is not merged into another record")
    provenance = store.read("Provenance", merge_id)
    if provenance is None or provenance.deleted:
        raise not_found(f"Provenance/{merge_id} (the merge of Patient/{loser})")
    merged = orjson.loads(provenance.content)
    restored = []
    for entity in merged.get("entity") or []:
        rtype, rid, _, version = str(entity["what"]["reference"]).split("/")
        old = store.vread(rtype, rid, int(version))
        if old is None or old.deleted:
            raise conflict(f"{rtype}/{rid}/_history/{version} (before the merge) cannot be read back")
        restored.append(orjson.loads(old.content))
    before = {f"{r['resourceType']}/{r['id']}" for r in restored}
    created = [ref for target in merged.get("target") or []
               if (ref := target["reference"].rsplit("/_history/", 1)[0]) not in before]  # fmt: skip
    with store.transaction() as tx:
        writes = Writes(tx, store)
        for old_body in restored:
            writes.write(old_body)
        for ref in created:
            rtype, rid = ref.split("/")
            writes.delete(rtype, rid)
        patients = sorted({r["id"] for r in restored if r["resourceType"] == "Patient" and not is_golden(r)})
        return record(writes, "unmerge", client, patients)
