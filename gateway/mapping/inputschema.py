"""The input schema: the shape of the records a mapping reads, for the static checks.

Built from example records (the golden inputs: member names and sample values) and from
form definitions (``formschema.py``: member names and the declared question types, choice
lists). A node with no members is "no evidence" (a leaf, or a part of the record nobody
described): paths below it are not judged.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InputSchema"]

_SAMPLES = 5


@dataclass(slots=True)
class InputSchema:
    """Member names below each object, sample leaf values, and what a form declares."""

    children: dict[str, InputSchema] = field(default_factory=dict)
    samples: list[Any] = field(default_factory=list)
    is_object: bool = False
    kind: str | None = None  # the question type a form declares (``forms.KINDS``)
    choices: list[str] | None = None  # the answer values a form lists for a select
    form: str | None = None  # the form definition file that declares this field

    def add(self, value: Any) -> None:
        """Merge one value (object, list or leaf) into the schema."""
        if isinstance(value, list):
            for item in value:
                self.add(item)
        elif isinstance(value, dict):
            self.is_object = True
            for key, member in value.items():
                self.children.setdefault(key, InputSchema()).add(member)
        elif value is not None and len(self.samples) < _SAMPLES and value not in self.samples:
            self.samples.append(value)

    def merge(self, other: InputSchema) -> None:
        """Merge another schema (a form's) into this one."""
        self.is_object = self.is_object or other.is_object
        self.samples.extend(sample for sample in other.samples if sample not in self.samples)
        self.kind = self.kind or other.kind
        self.choices = self.choices if self.choices is not None else other.choices
        self.form = self.form or other.form
        for key, child in other.children.items():
            self.children.setdefault(key, InputSchema()).merge(child)

    def find(
        self, keys: tuple[str, ...], top: str = "the record", evidence: str = "the golden inputs"
    ) -> tuple[InputSchema | None, str | None]:
        """The node at ``keys``, or ``(None, message)`` naming the first unknown member (and
        ``evidence``, what the schema was built from)."""
        node = self
        for depth, key in enumerate(keys):
            child = node.children.get(key)
            if child is None:
                if not node.is_object:
                    return None, None  # a leaf or nothing seen: no evidence either way
                where = ".".join(keys[:depth]) or top
                close = difflib.get_close_matches(key, list(node.children), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                return None, f"no field {key!r} under {where} in {evidence}{hint}"
            node = child
        return node, None
