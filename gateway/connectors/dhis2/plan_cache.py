"""Reusing a visit's tracker plan while nothing it was planned from has changed.

Every job of one visit (its Encounter, each Observation, MedicationDispense,
ServiceRequest …) plans the same tracked entity, enrollment and event, one job after the
other (the queue hands out one job per patient at a time), and planning is most of the
delivery worker's CPU (FHIRPath rules over every resource of the visit). A plan is a pure
function of the Encounter and of what the transformer reads through its ``ResourceSource``,
so ``PlanCache`` keeps, per Encounter content, the reads a plan made (each call and its
answer) with the plan: the next job of the visit repeats the reads (cheap, and needed anyway
to see changes) and, when every answer is equal to the recorded one, gets the same plan
without evaluating the mapping again. Any difference, e.g. a new Observation of the visit
or a Patient edited, plans afresh. Mappings whose rules read the clock (``now()``,
``today()``) are never cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway import jsonio
from gateway.connectors.dhis2.sources import JsonObject, ResourceSource

# (method, arguments, answer as JSON bytes) of one read a plan made: bytes keep a cached
# plan's reads small (a visit's resources as dicts take ~10x the memory).
Read = tuple[str, tuple[str, ...], bytes]


class RecordingSource:
    """A ``ResourceSource`` that notes every read and its answer."""

    def __init__(self, source: ResourceSource) -> None:
        self._source = source
        self.reads: list[Read] = []

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The current version, noted."""
        found = self._source.get(resource_type, resource_id)
        self.reads.append(("get", (resource_type, resource_id), jsonio.dumps(found)))
        return found

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """A search, noted."""
        found = self._source.find(resource_type, param, reference)
        self.reads.append(("find", (resource_type, param, reference), jsonio.dumps(found)))
        return found

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The last live version of a deleted resource, noted."""
        found = self._source.was_deleted(resource_type, resource_id)
        self.reads.append(("was_deleted", (resource_type, resource_id), jsonio.dumps(found)))
        return found


def _unchanged(reads: tuple[Read, ...], source: ResourceSource) -> bool:
    """Whether ``source`` answers every read as it was answered (in order: the plan's control
    flow depends only on the answers, so equal answers mean the same reads and the same plan)."""
    for method, args, answer in reads:
        if jsonio.dumps(getattr(source, method)(*args)) != answer:
            return False
    return True


class PlanCache:
    """The last plans of recently planned visits, keyed by the Encounter's content (bounded, LRU)."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._plans: OrderedDict[bytes, tuple[tuple[Read, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()  # deliveries of several lanes plan in worker threads

    def plan(self, encounter: JsonObject, source: ResourceSource, make: Callable[[ResourceSource], Any]) -> Any:
        """``make(source)``'s plan for ``encounter``, reused when its reads answer the same."""
        key = jsonio.dumps(encounter)
        with self._lock:
            cached = self._plans.get(key)
        if cached is not None and _unchanged(cached[0], source):
            with self._lock:
                if key in self._plans:
                    self._plans.move_to_end(key)
            return cached[1]
        recorder = RecordingSource(source)
        plan = make(recorder)  # an error is raised, not kept: the next job plans again
        with self._lock:
            self._plans[key] = (tuple(recorder.reads), plan)
            self._plans.move_to_end(key)
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return plan
