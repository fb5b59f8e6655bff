"""The candidate index: every stored Patient's features, filed under its blocking keys (in memory).

Memory is what limits it (every stored Patient is in it), so it keeps one object per distinct
value — names follow a long-tailed distribution, and a household shares its phone, place and
family name, so a million Patients hold far fewer distinct values than values — and does not
keep each Patient's keys: they are computed again from its features when it is removed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TypeVar

from gateway.identity.blocking import blocking_keys
from gateway.identity.normalise import Features
from gateway.identity.rules import Rules
from gateway.identity.scoring import Comparison, Grade, compare

T = TypeVar("T")
_TF_MIN_RECORDS = 10_000


class CandidateIndex:
    """Features by Patient id and Patient ids by blocking key."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._features: dict[str, Features] = {}
        self._blocks: defaultdict[str, set[str]] = defaultdict(set)
        self._shared: dict[object, object] = {}
        # How many indexed records hold each folded given and family name (term frequencies).
        self._names: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._features)

    def _one(self, value: T) -> T:
        """The index's one object equal to ``value``."""
        return self._shared.setdefault(value, value)  # type: ignore[return-value]

    def get(self, pid: str) -> Features | None:
        """The indexed features of ``pid``."""
        return self._features.get(pid)

    def add(self, f: Features) -> None:
        """File (or re-file) ``f``."""
        self.remove(f.id)
        one = self._one
        self._features[f.id] = Features(
            id=f.id, given=one(f.given), family=one(f.family), birth=one(f.birth),
            birth_estimated=f.birth_estimated, sex=f.sex, location=one(f.location), phones=one(f.phones),
            national_ids=f.national_ids,
        )  # fmt: skip
        for key in blocking_keys(f):
            self._blocks[one(key)].add(f.id)
        for name in (("given", f.given), ("family", f.family)):
            if name[1]:
                self._names[name] = self._names.get(name, 0) + 1

    def remove(self, pid: str) -> None:
        """Forget ``pid`` (nothing if unknown)."""
        f = self._features.pop(pid, None)
        if f is None:
            return
        for name in (("given", f.given), ("family", f.family)):
            left = self._names.get(name, 0) - 1
            if left > 0:
                self._names[name] = left
            else:
                self._names.pop(name, None)
        for key in blocking_keys(f):
            block = self._blocks.get(key)
            if block is not None:
                block.discard(pid)
                if not block:
                    del self._blocks[key]

    def block_sizes(self) -> list[int]:
        """How many records each blocking key holds (for benchmarks and tuning ``max_block_size``)."""
        return [len(block) for block in self._blocks.values()]

    def candidates(self, f: Features) -> set[str]:
        """Ids sharing a blocking key with ``f`` (not ``f`` itself); oversized blocks are skipped, as
        a key shared by hundreds of records (a clinic's phone number) tells nothing."""
        found: set[str] = set()
        limit = self.rules.max_block_size
        for key in blocking_keys(f):
            block = self._blocks.get(key)
            if block is not None and len(block) <= limit:
                found |= block
        found.discard(f.id)
        return found

    def matches(self, f: Features) -> list[tuple[str, Comparison]]:
        """Every candidate scored, best first, without the certain non-matches."""
        scored = []
        # Below _TF_MIN_RECORDS records a name's share says little (in a register of two, every
        # name is "half the register"): shares are taken as if it held that many.
        total = max(len(self._features), _TF_MIN_RECORDS)
        names = self._names

        def share(field: str, value: str) -> float:
            return names.get((field, value), 0) / total

        for pid in self.candidates(f):
            other = self._features[pid]
            result = compare(f, other, self.rules, share)
            if result.grade is not Grade.CERTAINLY_NOT:
                scored.append((pid, result))
        scored.sort(key=lambda item: (item[1].grade is not Grade.CERTAIN, -item[1].score, item[0]))
        return scored
