"""``IdentityEngine``: follows the change feed, matches every Patient written, and records the outcome.

It runs after writes commit (``catch_up``, called by the ingest service and the FHIR write
routes once their transaction is done), never inside them, so matching never slows or
fails a write. What it does for each new or changed Patient:

* files its features in the candidate index and scores the candidates (``CandidateIndex``);
* a ``certain`` pair is linked: each Patient gets a new version with a ``Patient.link``
  (``seealso``) to the other, marked with ``KEPT_LINK_EXTENSION`` so a source re-sending
  its record keeps the link and writes no new version (see ``gateway.store.rows``);
* a ``probable`` pair becomes a review Task (id derived from the pair, so matching again
  writes nothing new).

The index lives in memory and is rebuilt from the feed when the process starts: a follower
only needs the feed position it reached, and the links it writes are themselves in the feed.
Logs name counts and ids only.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from gateway import jsonio
from gateway.identity.golden import Writes, forget, refresh, without_link
from gateway.identity.index import CandidateIndex
from gateway.identity.normalise import Features, features
from gateway.identity.rules import Rules
from gateway.identity.scoring import Comparison, Grade, compare
from gateway.store import (
    KEPT_LINK_EXTENSION,
    Store,
    StoreTransaction,
    is_golden,
    is_kept_identifier,
    linked_ids,
)
from gateway.store import REVIEW_TASK_CODE as REVIEW_TASK_CODE  # the package surface names them here
from gateway.store import REVIEW_TASK_SYSTEM as REVIEW_TASK_SYSTEM

log = logging.getLogger("gateway.identity")

_TASK_NS = uuid.UUID("6f1c0c4e-5a8e-4d3f-9a37-0b5f3c2d7e11")
_BATCH = 1000


class IdentityEngine:
    """Patient matching over one store; see the module docstring."""

    def __init__(self, store: Store, rules: Rules) -> None:
        self.store = store
        self.rules = rules
        self.index = CandidateIndex(rules)
        # Per Patient, a digest of what survivorship copies from it that matching does not compare
        # (identifiers, address, managing organization, …): a source correcting one is not a new
        # match, but the golden record must follow it.
        self._survived: dict[str, int] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def catch_up(self) -> int:
        """Match every Patient written since the last call; returns how many were (re)matched."""
        with self._lock:
            matched = 0
            while True:
                changes = self.store.changes(self._seq, _BATCH)
                if not changes:
                    return matched
                ids = list(dict.fromkeys(c.id for c in changes if c.type == "Patient"))
                self._seq = changes[-1].seq
                if ids:
                    matched += self._process(ids)

    def _process(self, ids: list[str]) -> int:
        live = {res.id: res for res in self.store.read_many([("Patient", pid) for pid in ids])}
        links: list[tuple[str, str, Comparison]] = []
        reviews: list[tuple[str, str, Comparison]] = []
        stale: list[tuple[str, str, Comparison]] = []  # links the matcher made that no longer hold
        changed: list[str] = []  # Patients whose compared values changed: their golden records are redone
        gone: list[str] = []  # Patients deleted: their golden records lose them
        matched = 0
        for pid in ids:
            res = live.get(pid)
            body = None if res is None or res.deleted else jsonio.loads(res.content)
            if body is None or is_golden(body):  # golden records are the gateway's own, never matched
                if body is None and self.index.get(pid) is not None:
                    gone.append(pid)
                self.index.remove(pid)
                self._survived.pop(pid, None)
                continue
            found = features(body, self.rules)
            survived, self._survived[pid] = self._survived.get(pid), self._survivorship_digest(body)
            if self.index.get(pid) == found:
                if survived is not None and survived != self._survived[pid]:
                    changed.append(pid)  # nothing to match again, but the golden record copies what changed
                continue  # a link we wrote, a write-back, or unchanged content: nothing to match again
            self.index.add(found)
            matched += 1
            changed.append(pid)
            certain: set[str] = set()
            for other, result in self.index.matches(found):
                if result.grade is Grade.CERTAIN:
                    links.append((pid, other, result))
                    certain.add(other)
                elif result.grade is Grade.PROBABLE:
                    reviews.append((pid, other, result))
            # The record changed: a link the matcher made may no longer hold (a CHW corrected the
            # name and birth date of the wrong person). Each is compared again.
            for other in linked_ids(body, "seealso"):
                compared = None if other in certain else self.compare_ids(pid, other)
                if compared is not None and compared.grade is not Grade.CERTAIN:
                    stale.append((pid, other, compared))
        unlinked: list[str] = []
        if links or reviews or stale:
            with self.store.transaction() as tx:
                for a, b, result in links:
                    if _rejected(tx, a, b):
                        continue  # a reviewer kept this pair apart: matching again does not undo that
                    _link(tx, a, b, result)
                    _link(tx, b, a, result)
                for a, b, result in reviews:
                    _review(tx, a, b, result)
                for a, b, result in stale:
                    if _decided(tx, a, b):
                        continue  # a reviewer joined this pair: only a reviewer parts it
                    _unlink(tx, a, b)
                    _unlink(tx, b, a)
                    unlinked.append(b)
                    if result.grade is Grade.PROBABLE:
                        _review(tx, a, b, result)
            log.info("identity matched=%d links=%d reviews=%d unlinked=%d", matched, len(links), len(reviews),
                     len(unlinked))
        changed += [pid for pid in unlinked if pid not in changed]
        if changed or gone:
            with self.store.transaction() as tx:
                writes = Writes(tx, self.store)
                for pid in gone:
                    forget(writes, self.rules, pid)
                refresh(writes, self.rules, changed)
        return matched

    def _survivorship_digest(self, body: dict[str, Any]) -> int:
        """What survivorship reads of a record, as a number (identifiers the gateway keeps, such as
        written-back DHIS2 UIDs, and its links left out: they never change a golden record)."""
        source = (body.get("meta") or {}).get("source")
        picked: dict[str, Any] = {"source": source, "_birthDate": body.get("_birthDate")}
        for element in self.rules.survivorship.elements:
            value = body.get(element)
            if element == "identifier" and isinstance(value, list):
                value = [i for i in value if not is_kept_identifier(i)]
            picked[element] = value
        return hash(jsonio.dumps(picked))

    def match(self, resource: dict[str, Any], count: int) -> list[tuple[str, Comparison]]:
        """Stored Patients that may be ``resource``'s person, best first (``Patient/$match``)."""
        self.catch_up()
        probe = features({**resource, "id": ""}, self.rules)
        scored = self.index.matches(probe)
        return scored[:count]

    def compare_ids(self, a: str, b: str) -> Comparison | None:
        """The comparison of two indexed Patients (None if either is not indexed)."""
        fa, fb = self.index.get(a), self.index.get(b)
        return None if fa is None or fb is None else compare(fa, fb, self.rules)

    def features_of(self, pid: str) -> Features | None:
        """The indexed features of a Patient."""
        return self.index.get(pid)


def _link(tx: StoreTransaction, pid: str, other: str, result: Comparison) -> None:
    """Add a ``seealso`` link from ``pid`` to ``other`` (nothing if it is there or ``pid`` is gone)."""
    current = tx.read("Patient", pid)
    if current is None or current.deleted:
        return
    body = jsonio.loads(current.content)
    links = [link for link in body.get("link") or [] if isinstance(link, dict)]
    target = f"Patient/{other}"
    if any((link.get("other") or {}).get("reference") == target for link in links):
        return
    evidence = result.rule or f"score {result.score:.1f}"
    links.append({
        "extension": [{"url": KEPT_LINK_EXTENSION, "valueString": evidence}],
        "other": {"reference": target},
        "type": "seealso",
    })  # fmt: skip
    body["link"] = links
    tx.update(body)


def _unlink(tx: StoreTransaction, pid: str, other: str) -> None:
    """Take the gateway's ``seealso`` link from ``pid`` to ``other`` off (nothing if there is none)."""
    current = tx.read("Patient", pid)
    if current is None or current.deleted:
        return
    unlinked = without_link(jsonio.loads(current.content), "seealso", other)
    if unlinked is not None:
        tx.update(unlinked)


def _decided(tx: StoreTransaction, a: str, b: str) -> bool:
    """Whether a reviewer decided the pair (its review Task is no longer ``requested``)."""
    task = tx.read("Task", review_task_id(a, b))
    return task is not None and not task.deleted and jsonio.loads(task.content).get("status") != "requested"


def _rejected(tx: StoreTransaction, a: str, b: str) -> bool:
    """Whether a reviewer rejected the pair (its review Task is ``rejected``)."""
    task = tx.read("Task", review_task_id(a, b))
    return task is not None and not task.deleted and jsonio.loads(task.content).get("status") == "rejected"


def review_task_id(a: str, b: str) -> str:
    """The id of the review Task of a pair (either order)."""
    return str(uuid.uuid5(_TASK_NS, "|".join(sorted((a, b)))))


def review_task(a: str, b: str, result: Comparison) -> dict[str, Any]:
    """The review Task of a pair (``requested``), with the score and the level of every field."""
    first, second = sorted((a, b))
    evidence = [
        {"type": {"text": f"level:{name}"}, "valueString": level}
        for name, level in sorted(result.levels.items())
        if level is not None
    ]
    return {
        "resourceType": "Task",
        "id": review_task_id(a, b),
        "status": "requested",
        "intent": "proposal",
        "code": {"coding": [{"system": REVIEW_TASK_SYSTEM, "code": REVIEW_TASK_CODE}], "text": "Same person?"},
        "for": {"reference": f"Patient/{first}"},
        "focus": {"reference": f"Patient/{second}"},
        "input": [{"type": {"text": "score"}, "valueDecimal": round(result.score, 2)}, *evidence],
    }


def _review(tx: StoreTransaction, a: str, b: str, result: Comparison) -> None:
    """Write (or leave as it is) the review Task of a pair; a pair a reviewer decided stays decided."""
    current = tx.read("Task", review_task_id(a, b))
    if current is not None and not current.deleted and jsonio.loads(current.content).get("status") != "requested":
        return
    task = review_task(a, b, result)
    tx.update(task, skip_unchanged=True)
