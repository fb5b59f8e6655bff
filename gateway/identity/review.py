"""Review of doubtful pairs: list them with the evidence per field, accept (link) or reject (unlink).

A pair is the review Task the engine wrote (``engine.review_task_id``). Accepting it links the
two records (kept ``seealso`` links both ways, so their clusters and golden records become
one) and completes the Task; rejecting it removes such links if there are any (their golden
record splits) and marks the Task ``rejected``, which the engine then leaves alone. Either
decision can be taken back by the other one, and each is recorded by a Provenance
(``decision.record``). ``unlink`` rejects a pair the engine linked without asking (no Task yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import jsonio
from gateway.identity.decision import Decision, conflict, not_found, record
from gateway.identity.engine import review_task, review_task_id
from gateway.identity.golden import Writes, kept_link, refresh, without_link
from gateway.identity.normalise import HOUSEHOLD_LOCATION, features
from gateway.identity.rules import Rules
from gateway.identity.scoring import compare
from gateway.search import QueryParser, default_registry
from gateway.store import REVIEW_TASK_CODE, REVIEW_TASK_SYSTEM, Store, StoredResource, is_golden, linked_ids

#: Task.status of a pair: waiting, linked by a reviewer, kept apart by a reviewer.
STATUSES = {"pending": "requested", "accepted": "completed", "rejected": "rejected"}
_FIELDS = ("given", "family", "birthdate", "sex", "phone", "location", "national_id")
JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One compared field of a pair: its level and what each record holds."""

    field: str
    level: str | None
    first: str
    second: str


@dataclass(frozen=True, slots=True)
class ReviewPair:
    """A pair to review (or reviewed) with the score and the evidence per field."""

    task: str
    status: str  # pending, accepted, rejected
    first: str
    second: str
    score: float | None
    evidence: list[Evidence]

    def to_json(self) -> JsonObject:
        """The pair as the admin API and ``--json`` show it."""
        return {
            "id": self.task, "status": self.status, "patients": [self.first, self.second], "score": self.score,
            "evidence": [{"field": e.field, "level": e.level, "values": [e.first, e.second]} for e in self.evidence],
        }  # fmt: skip


def list_pairs(store: Store, rules: Rules, status: str = "pending", limit: int = 100) -> list[ReviewPair]:
    """Review pairs of ``status`` (pending, accepted, rejected or all), best score first."""
    items = [("code", f"{REVIEW_TASK_SYSTEM}|{REVIEW_TASK_CODE}")]
    if status != "all":
        items.append(("status", STATUSES[status]))
    query = QueryParser(default_registry(), limit, limit).parse("Task", items)
    found = store.search(query).resources
    pairs = [_pair(store, rules, task) for task in found]
    return sorted(pairs, key=lambda p: (-(p.score or 0.0), p.task))


def show_pair(store: Store, rules: Rules, task_id: str) -> ReviewPair:
    """One review pair with its evidence."""
    task = store.read("Task", task_id)
    if task is None or task.deleted or REVIEW_TASK_CODE.encode() not in task.content:
        raise not_found(f"review pair {task_id}")
    return _pair(store, rules, task)


def _pair(store: Store, rules: Rules, task: StoredResource) -> ReviewPair:
    body = jsonio.loads(task.content)
    first = str(body["for"]["reference"]).partition("/")[2]
    second = str(body["focus"]["reference"]).partition("/")[2]
    levels = {str(i["type"]["text"]).removeprefix("level:"): i.get("valueString") for i in body.get("input") or []
              if str(i.get("type", {}).get("text", "")).startswith("level:")}  # fmt: skip
    score = next((i.get("valueDecimal") for i in body.get("input") or [] if i["type"].get("text") == "score"), None)
    records = {r.id: jsonio.loads(r.content) for r in store.read_many([("Patient", first), ("Patient", second)])}
    a, b = _values(records.get(first, {}), rules), _values(records.get(second, {}), rules)
    evidence = [Evidence(name, levels.get(name), a.get(name, ""), b.get(name, "")) for name in _FIELDS
                if name in levels or a.get(name) or b.get(name)]  # fmt: skip
    status = next((name for name, code in STATUSES.items() if code == body.get("status")), str(body.get("status")))
    return ReviewPair(task.id, status, first, second, score, evidence)


def _values(patient: JsonObject, rules: Rules) -> dict[str, str]:
    """What a reviewer compares, as text (shown to administrators only, never logged)."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    name = names[0] if names else {}
    extensions = [e.get("valueReference", {}).get("reference", "") for e in patient.get("extension") or []
                  if isinstance(e, dict) and e.get("url") == HOUSEHOLD_LOCATION]  # fmt: skip
    address = next((a for a in patient.get("address") or [] if isinstance(a, dict)), {})
    return {
        "given": " ".join(name.get("given") or []),
        "family": str(name.get("family") or ""),
        "birthdate": str(patient.get("birthDate") or ""),
        "sex": str(patient.get("gender") or ""),
        "phone": ", ".join(t.get("value", "") for t in patient.get("telecom") or [] if t.get("system") == "phone"),
        "location": next(iter(extensions), "") or str(address.get("district") or address.get("city") or ""),
        "national_id": ", ".join(f"{i.get('system')}|{i.get('value')}" for i in patient.get("identifier") or []
                                 if isinstance(i, dict) and i.get("system") in rules.national_id_systems),
    }  # fmt: skip


def accept(store: Store, rules: Rules, task_id: str, client: str) -> Decision:
    """Link the pair of a review Task: one person, one golden record."""
    with store.transaction() as tx:
        writes = Writes(tx, store)
        task, first, second = _task(writes, task_id)
        for a, b in ((first, second), (second, first)):
            body = _patient(writes, a)
            if b not in linked_ids(body, "seealso"):
                links = [*(body.get("link") or []), kept_link("seealso", b, "review: accepted")]
                writes.write({**body, "link": links})
        _decide(writes, task, "completed", "accepted")
        refresh(writes, rules, [first, second])
        return record(writes, "link", client, [first, second])


def reject(store: Store, rules: Rules, task_id: str, client: str) -> Decision:
    """Keep the pair of a review Task apart: their links (if any) go, their golden record splits."""
    with store.transaction() as tx:
        writes = Writes(tx, store)
        task, first, second = _task(writes, task_id)
        return _apart(writes, rules, task, first, second, client)


def unlink(store: Store, rules: Rules, first: str, second: str, client: str) -> Decision:
    """Reject a pair linked automatically (its review Task is written, ``rejected``)."""
    if first == second:
        raise conflict("a Patient is not linked to itself")
    a, b = sorted((first, second))
    with store.transaction() as tx:
        writes = Writes(tx, store)
        first_body, second_body = _patient(writes, a), _patient(writes, b)
        task = writes.read("Task", review_task_id(a, b)) or review_task(
            a, b, compare(features(first_body, rules), features(second_body, rules), rules))
        return _apart(writes, rules, task, a, b, client)


def _apart(writes: Writes, rules: Rules, task: JsonObject, first: str, second: str, client: str) -> Decision:
    for a, b in ((first, second), (second, first)):
        unlinked = without_link(_patient(writes, a), "seealso", b)
        if unlinked is not None:
            writes.write(unlinked)
    _decide(writes, task, "rejected", "rejected")
    refresh(writes, rules, [first, second])
    return record(writes, "unlink", client, [first, second])


def _task(writes: Writes, task_id: str) -> tuple[JsonObject, str, str]:
    task = writes.read("Task", task_id)
    codes = [c.get("code") for c in ((task or {}).get("code") or {}).get("coding") or []]
    if task is None or REVIEW_TASK_CODE not in codes:
        raise not_found(f"review pair {task_id}")
    return task, str(task["for"]["reference"]).partition("/")[2], str(task["focus"]["reference"]).partition("/")[2]


def _patient(writes: Writes, pid: str) -> JsonObject:
    body = writes.read("Patient", pid)
    if body is None:
        raise not_found(f"Patient/{pid}")
    if is_golden(body):
        raise conflict(f"Patient/{pid} is a golden record: review the source records it links to")
    return body


def _decide(writes: Writes, task: JsonObject, status: str, outcome: str) -> None:
    """Set the Task's status (nothing written when it has it already)."""
    if task.get("status") != status:
        writes.write({**task, "status": status, "businessStatus": {"text": outcome}})
