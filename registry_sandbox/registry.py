"""The registry's records and golden records, and its deterministic matching rule."""

from __future__ import annotations

import copy
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
#: OpenCR tags its golden records so clients can tell them from submitted ones.
GOLDEN_TAG = {"system": "http://openclientregistry.org/fhir/tag/csr", "code": "5c827da5-4858-4f3d-a50c-62ece001efea",
              "display": "Client Registry Record"}
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def _fold(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join("".join(ch if ch.isalpha() else " " for ch in plain).split())


def _name_key(patient: Json) -> tuple[str, str, str] | None:
    """Folded given names, family name and birth date; None when one is missing."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    birth = patient.get("birthDate")
    if not names or not isinstance(birth, str):
        return None
    given = _fold(" ".join(g for g in names[0].get("given") or [] if isinstance(g, str)))
    family = _fold(names[0].get("family") or "")
    return (given, family, birth) if given and family else None


def _identifiers(patient: Json) -> set[tuple[str, str]]:
    return {(i["system"], i["value"]) for i in patient.get("identifier") or []
            if isinstance(i, dict) and isinstance(i.get("system"), str) and isinstance(i.get("value"), str)}


@dataclass
class Registry:
    """Submitted records by id, each linked to a golden record (its CRUID)."""

    #: Identifier systems equal values of which are one person (national ids, not a source's own ids).
    match_systems: frozenset[str] = frozenset()
    records: dict[str, Json] = field(default_factory=dict)
    golden_of: dict[str, str] = field(default_factory=dict)
    golden: dict[str, Json] = field(default_factory=dict)

    def find(self, system: str | None, value: str) -> list[Json]:
        """Records and golden records holding the identifier (any system when ``system`` is None)."""
        found = []
        for record in [*self.records.values(), *self.golden.values()]:
            if any(v == value and (system is None or s == system) for s, v in _identifiers(record)):
                found.append(record)
        return found

    def create(self, patient: Json) -> Json:
        """Store a submitted record, link it to its golden record, and return it as stored."""
        rid = str(uuid.uuid4())
        self.records[rid] = {**copy.deepcopy(patient), "id": rid}
        self._link(rid)
        return self.records[rid]

    def update(self, rid: str, patient: Json) -> Json:
        """Replace a submitted record (its golden link is kept)."""
        links = self.records[rid].get("link")
        self.records[rid] = {**copy.deepcopy(patient), "id": rid, "link": links}
        return self.records[rid]

    def read(self, rid: str) -> Json | None:
        """A record or a golden record."""
        return self.records.get(rid) or self.golden.get(rid)

    def match(self, patient: Json) -> list[tuple[Json, float, str]]:
        """Golden records that may be ``patient``'s person: (golden record, score, match grade)."""
        results: dict[str, tuple[float, str]] = {}
        ids = {(s, v) for s, v in _identifiers(patient) if s in self.match_systems}
        key = _name_key(patient)
        for rid, record in self.records.items():
            cruid = self.golden_of.get(rid)
            if cruid is None:
                continue  # the record being linked
            if ids & _identifiers(record):
                results[cruid] = (1.0, "certain")
            elif key is not None and key == _name_key(record) and cruid not in results:
                results[cruid] = (0.8, "probable")
        ranked = sorted(results.items(), key=lambda item: -item[1][0])
        return [(self.golden[cruid], score, grade) for cruid, (score, grade) in ranked]

    def _link(self, rid: str) -> None:
        record = self.records[rid]
        certain = [m for m in self.match(record) if m[2] == "certain"] or self.match(record)
        if certain:
            cruid = certain[0][0]["id"]
        else:
            cruid = str(uuid.uuid4())
            self.golden[cruid] = {"resourceType": "Patient", "id": cruid, "meta": {"tag": [GOLDEN_TAG]},
                                  "name": record.get("name", []), "birthDate": record.get("birthDate"),
                                  "gender": record.get("gender"), "link": []}
        self.golden_of[rid] = cruid
        record["link"] = [{"other": {"reference": f"Patient/{cruid}"}, "type": "refer"}]
        self.golden[cruid]["link"].append({"other": {"reference": f"Patient/{rid}"}, "type": "seealso"})
