"""Golden records: one gateway-owned Patient per person, built from the source Patients linked to it.

A person is a cluster: the source Patients joined by the gateway's kept links (``seealso``
between records the matcher or a reviewer linked, ``replaces``/``replaced-by`` after a merge).
Each cluster has one golden Patient (``meta.tag`` ``urn:chw-gateway:identity|golden``):

* its elements come from the members by the rule file's ``survivorship`` (a merged-away record,
  one with ``replaced-by``, contributes nothing while another member does);
* it links to every member with ``seealso`` (FHIR R4: "may contain additional information
  about the person"), and every member links to it with ``refer`` ("not considered the main
  source of information … the link points forward to another patient resource that should be
  consulted"), a kept link like the matcher's;
* its id is stable: a new cluster's golden id comes from its smallest member id, a cluster
  keeps the golden its members already refer to, and when two clusters join the preferred
  (else the smallest) golden stays while the other is retired: ``active: false`` and
  ``replaced-by`` the survivor, which ``replaces`` it. When a cluster splits (a link rejected),
  the part holding the smallest member keeps the golden and the other gets a new one.

Golden Patients are never matched (the engine skips them) and are written only here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from gateway import jsonio
from gateway.identity.rules import Rules
from gateway.identity.survivorship import survive
from gateway.search import QueryParser, default_registry, format_instant
from gateway.store import (
    GOLDEN_TAG_CODE,
    GOLDEN_TAG_SYSTEM,
    KEPT_LINK_EXTENSION,
    ResourceStore,
    StoredResource,
    StoreTransaction,
    hash_body,
    is_golden,
    is_kept_identifier,
    is_kept_link,
    linked_ids,
)

_NS = uuid.UUID("0d7f2a51-9c2e-4b8a-a0f4-3e6b1c9d5a27")
#: Kept link types that join source records into one person.
_JOINING = ("seealso", "replaces", "replaced-by")
_HISTORY = 20  # versions read back to find when a record's content last changed
_LINKERS = 100  # Patients linking to one record (its golden record and the records linked to it)
JsonObject = dict[str, Any]


def golden_id(member: str) -> str:
    """The id of the golden record a cluster whose smallest member is ``member`` starts with."""
    return str(uuid.uuid5(_NS, member))


def kept_link(link_type: str, target: str, evidence: str) -> JsonObject:
    """A ``Patient.link`` the gateway keeps (a source re-sending its record does not drop it)."""
    return {
        "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": evidence}],
        "other": {"reference": f"Patient/{target}"},
        "type": link_type,
    }


class Writes:
    """The writes of one identity decision in one transaction, with the version each resource had
    before its first write there (what an undo restores)."""

    def __init__(self, tx: StoreTransaction, store: ResourceStore) -> None:
        self.tx = tx
        self.store = store
        self.before: dict[tuple[str, str], int | None] = {}
        self.written: dict[tuple[str, str], StoredResource] = {}

    def read(self, rtype: str, rid: str) -> JsonObject | None:
        """The live resource, or None."""
        current = self.tx.read(rtype, rid)
        if current is None or current.deleted:
            return None
        body: JsonObject = jsonio.loads(current.content)
        return body

    def _remember(self, rtype: str, rid: str) -> tuple[str, str]:
        """Note the version a resource has before this decision first writes it."""
        key = (rtype, rid)
        if key not in self.before:
            current = self.tx.read(rtype, rid)
            self.before[key] = None if current is None else current.version
        return key

    def write(self, body: JsonObject) -> StoredResource:
        """Store ``body`` as the new version of its resource."""
        key = self._remember(str(body["resourceType"]), str(body["id"]))
        result = self.tx.update(body)
        self.written[key] = result.resource
        return result.resource

    def changed_at(self, body: JsonObject) -> str:
        """When a Patient's content last changed: the gateway's own writes (links, DHIS2 UIDs)
        do not count, so "most recent" means the record a source changed last."""
        versions, _ = self.store.history("Patient", str(body["id"]), count=_HISTORY)
        mine = _content_hash(body)
        when = str((body.get("meta") or {}).get("lastUpdated", ""))
        for version in versions:
            if version.deleted or _content_hash(jsonio.loads(version.content)) != mine:
                break
            when = format_instant(round(version.last_updated.timestamp(), 3))
        return when

    def delete(self, rtype: str, rid: str) -> None:
        """Delete a resource (a golden record an undo takes back, or one whose last record went)."""
        key = self._remember(rtype, rid)
        gone = self.tx.delete(rtype, rid)
        if gone is not None:
            self.written[key] = gone


def without_link(body: JsonObject, link_type: str, target: str) -> JsonObject | None:
    """``body`` without the gateway's kept ``link_type`` link to ``Patient/target`` (its ``link``
    left out when none remains), or None when it has no such link."""
    def dropped(link: Any) -> bool:
        reference = (link.get("other") or {}).get("reference") if isinstance(link, dict) else None
        return is_kept_link(link) and link.get("type") == link_type and reference == f"Patient/{target}"

    links = body.get("link") or []
    kept = [link for link in links if not dropped(link)]
    if len(kept) == len(links):
        return None
    rest = {k: v for k, v in body.items() if k != "link"}
    return {**rest, "link": kept} if kept else rest


def _content_hash(body: JsonObject) -> str:
    return hash_body({k: v for k, v in body.items() if k != "meta"})


def _same(current: JsonObject, body: JsonObject) -> bool:
    """Equal apart from version metadata and identifiers another writer keeps (a DHIS2 UID written
    back onto a golden record: the store keeps it on every new version)."""
    def plain(resource: JsonObject) -> JsonObject:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        identifiers = [i for i in resource.get("identifier") or [] if not is_kept_identifier(i)]
        return {**resource, "meta": meta, "identifier": identifiers}

    return plain(current) == plain(body)


def refresh(writes: Writes, rules: Rules, pids: Iterable[str], prefer: str | None = None) -> None:
    """Bring the golden records of the clusters of ``pids`` (source Patient ids) up to date;
    ``prefer`` is the golden a joined cluster keeps (a merge keeps the survivor's)."""
    seen: set[str] = set()
    clusters: list[dict[str, JsonObject]] = []
    for pid in sorted(set(pids)):
        if pid in seen:
            continue
        body = writes.read("Patient", pid)
        if body is None or is_golden(body):
            continue
        members = _cluster(writes, pid, body)
        seen |= members.keys()
        clusters.append(members)
    chosen = _assign(writes, clusters, prefer)
    for members, gid in zip(clusters, chosen, strict=True):
        _settle(writes, rules, members, gid, set(chosen))


def _assign(writes: Writes, clusters: list[dict[str, JsonObject]], prefer: str | None) -> list[str]:
    """The golden id of each cluster: one its members refer to, the cluster's own first (after a
    split the part holding the golden's original member keeps it, the other part gets its own back)."""
    referred = [{g for body in members.values() for g in linked_ids(body, "refer")} for members in clusters]
    own = [{golden_id(mid) for mid in members} for members in clusters]
    order = sorted(range(len(clusters)), key=lambda i: (not (referred[i] & own[i]), min(clusters[i])))
    claimed: set[str] = set()
    chosen: dict[int, str] = {}
    for i in order:
        live = sorted(g for g in referred[i] - claimed if _active_golden(writes, g))
        mine = sorted((referred[i] & own[i]) - claimed)
        if prefer in live:
            gid = prefer
        elif mine and mine[0] in live:
            gid = mine[0]
        elif live:
            gid = live[0]
        elif own[i] - claimed:
            gid = min(own[i] - claimed)  # a new cluster, or the part of a split that gets its old golden back
        else:
            gid = golden_id("|".join(sorted(clusters[i])))
        claimed.add(gid)
        chosen[i] = gid
    return [chosen[i] for i in range(len(clusters))]


def _active_golden(writes: Writes, gid: str) -> bool:
    body = writes.read("Patient", gid)
    return body is not None and is_golden(body) and not linked_ids(body, "replaced-by")


def forget(writes: Writes, rules: Rules, pid: str) -> None:
    """A source Patient was deleted: its golden record is redone from the others, or deleted with
    the last of them."""
    query = QueryParser(default_registry(), _LINKERS, _LINKERS).parse("Patient", [("link", f"Patient/{pid}")])
    for found in writes.tx.search(query).resources:
        body: JsonObject = jsonio.loads(found.content)
        if not is_golden(body):
            # Another source's record of the person: its seealso link to the deleted one would
            # now lead a client to a 410 (a merge's replaced-by stays: unmerge reads it).
            unlinked = without_link(body, "seealso", pid)
            if unlinked is not None:
                writes.write(unlinked)
            continue
        if linked_ids(body, "replaced-by"):
            continue
        others = [mid for mid in linked_ids(body, "seealso") if mid != pid and writes.read("Patient", mid)]
        if others:
            refresh(writes, rules, others, prefer=found.id)
        else:
            writes.delete("Patient", found.id)


def _cluster(writes: Writes, pid: str, body: JsonObject) -> dict[str, JsonObject]:
    """The live source Patients joined to ``pid`` by kept links, by id."""
    members = {pid: body}
    todo = [pid]
    while todo:
        for other in linked_ids(members[todo.pop()], *_JOINING):
            if other in members:
                continue
            found = writes.read("Patient", other)
            if found is not None and not is_golden(found):
                members[other] = found
                todo.append(other)
    return members


def _settle(writes: Writes, rules: Rules, members: dict[str, JsonObject], gid: str, chosen: set[str]) -> None:
    """Write the cluster's golden record, retire the other goldens its members referred to (unless
    another cluster keeps them), point every member at it."""
    retired = sorted({g for body in members.values() for g in linked_ids(body, "refer")} - chosen)
    retired = [g for g in retired if _active_golden(writes, g)]
    current = writes.read("Patient", gid)
    replaces = [link for link in (current or {}).get("link") or [] if link.get("type") == "replaces"
                and (link.get("other") or {}).get("reference", "").partition("/")[2] not in chosen]  # fmt: skip
    replaces += [link for g in retired if (link := kept_link("replaces", g, "clusters joined")) not in replaces]
    body = _golden(gid, members, rules, replaces, writes)
    if current is None or not _same(current, body):
        writes.write(body)
    for g in retired:
        old = writes.read("Patient", g) or {}
        writes.write({**old, "active": False, "link": [kept_link("replaced-by", gid, "clusters joined")]})
    for _, member in sorted(members.items()):
        _point(writes, member, gid)


def _golden(
    gid: str, members: dict[str, JsonObject], rules: Rules, replaces: list[JsonObject], writes: Writes
) -> JsonObject:
    """The golden Patient of ``members``."""
    current = [m for m in members.values() if not linked_ids(m, "replaced-by")] or list(members.values())
    current = [{**m, "meta": {**(m.get("meta") or {}), "lastUpdated": writes.changed_at(m)}} for m in current]
    elements = survive(current, rules.survivorship, rules.phone_suffix_digits)
    links = [kept_link("seealso", mid, "member") for mid in sorted(members)]
    return {
        "resourceType": "Patient",
        "id": gid,
        "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE, "display": "golden record"}]},
        "active": True,
        **elements,
        "link": links + replaces,
    }


def _point(writes: Writes, member: JsonObject, gid: str) -> None:
    """Give a member one kept ``refer`` link, to ``gid`` (nothing written when it has it already)."""
    if linked_ids(member, "refer") == [gid]:
        return
    links = [link for link in member.get("link") or [] if not (is_kept_link(link) and link.get("type") == "refer")]
    links.append(kept_link("refer", gid, "golden record"))
    writes.write({**member, "link": links})
