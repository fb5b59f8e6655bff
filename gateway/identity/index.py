"""The candidate index: every stored Patient's features, filed under its blocking keys (in memory)."""

from __future__ import annotations

from collections import defaultdict

from gateway.identity.blocking import blocking_keys
from gateway.identity.normalise import Features
from gateway.identity.rules import Rules
from gateway.identity.scoring import Comparison, Grade, compare


class CandidateIndex:
    """Features by Patient id and Patient ids by blocking key."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self._features: dict[str, Features] = {}
        self._keys: dict[str, set[str]] = {}
        self._blocks: defaultdict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._features)

    def get(self, pid: str) -> Features | None:
        """The indexed features of ``pid``."""
        return self._features.get(pid)

    def add(self, f: Features) -> None:
        """File (or re-file) ``f``."""
        self.remove(f.id)
        keys = blocking_keys(f)
        self._features[f.id] = f
        self._keys[f.id] = keys
        for key in keys:
            self._blocks[key].add(f.id)

    def remove(self, pid: str) -> None:
        """Forget ``pid`` (nothing if unknown)."""
        self._features.pop(pid, None)
        for key in self._keys.pop(pid, ()):
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
        for pid in self.candidates(f):
            other = self._features[pid]
            result = compare(f, other, self.rules)
            if result.grade is not Grade.CERTAINLY_NOT:
                scored.append((pid, result))
        scored.sort(key=lambda item: (item[1].grade is not Grade.CERTAIN, -item[1].score, item[0]))
        return scored
