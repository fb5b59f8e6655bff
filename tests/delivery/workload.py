"""Generated write workloads for delivery tests: patients and their observations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.store.base import ResourceStore

SOURCE = "urn:test:commcare-main"


@dataclass
class Workload:
    """A list of writes (creates, updates, deletes) and which patient each resource belongs to."""

    ops: list[tuple[str, Any]] = field(default_factory=list)
    patient_of: dict[str, str] = field(default_factory=dict)  # "Type/id" -> "Patient/x"

    @classmethod
    def generate(cls, *, patients: int, changes: int, seed: int = 7) -> Workload:
        """``patients`` Patient creates, then observation creates/updates/deletes up to ``changes``."""
        rng = random.Random(seed)
        work = cls()
        for i in range(patients):
            pid = f"p{i}"
            work.patient_of[f"Patient/{pid}"] = f"Patient/{pid}"
            work.ops.append(
                (
                    "put",
                    {
                        "resourceType": "Patient",
                        "id": pid,
                        "meta": {"source": SOURCE},
                        "name": [{"family": f"Family{i}"}],
                    },
                )
            )
        live: list[str] = []
        counter = 0
        while len(work.ops) < changes:
            roll = rng.random()
            if roll < 0.6 or len(live) < 10:
                counter += 1
                oid = f"o{counter}"
                patient = f"Patient/p{rng.randrange(patients)}"
                work.patient_of[f"Observation/{oid}"] = patient
                live.append(oid)
                work.ops.append(("put", _observation(oid, patient, counter)))
            elif roll < 0.9:
                oid = rng.choice(live)
                work.ops.append(
                    ("put", _observation(oid, work.patient_of[f"Observation/{oid}"], rng.randrange(999)))
                )
            else:
                oid = live.pop(rng.randrange(len(live)))
                work.ops.append(("delete", ("Observation", oid)))
        return work

    def apply(
        self, store: ResourceStore, start: int = 0, end: int | None = None, *, per_tx: int = 100
    ) -> None:
        """Write ``ops[start:end]``, ``per_tx`` writes per transaction."""
        ops = self.ops[start:end]
        for first in range(0, len(ops), per_tx):
            with store.transaction() as tx:
                for kind, arg in ops[first : first + per_tx]:
                    if kind == "put":
                        tx.update(arg)
                    else:
                        tx.delete(*arg)

    def expected(self, store: ResourceStore) -> dict[str, dict[str, Any]]:
        """What the destination must hold at the end: live resources without server meta."""
        result = {}
        for ref in self.patient_of:
            rtype, rid = ref.split("/")
            stored = store.read(rtype, rid)
            if stored is None or stored.deleted:
                continue
            resource = orjson.loads(stored.content)
            meta = {
                k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
            }
            if meta:
                resource["meta"] = meta
            else:
                resource.pop("meta", None)
            result[ref] = resource
        return result


def _observation(oid: str, patient: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"source": SOURCE},
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": patient},
        "valueQuantity": {"value": value, "unit": "kg"},
    }
