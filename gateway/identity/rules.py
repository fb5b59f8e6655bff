"""The identity rule file (``mappings/identity/*.yaml``): blocking, deterministic rules, the
Fellegi–Sunter model's m/u probabilities and the two thresholds, read with pydantic.

A file that does not fit is refused with ``file:line: field: message``, as the mapping loader does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.identity.survivorship_rules import Survivorship
from gateway.mapping import YamlSyntaxError, format_path, read_yaml

#: The fields a pair of records is compared on; each has levels from most to least alike.
FIELD_LEVELS: dict[str, tuple[str, ...]] = {
    "given": ("exact", "close", "similar", "different"),
    "family": ("exact", "close", "similar", "different"),
    "birthdate": ("exact", "day_month_swapped", "year_off_by_one", "estimated_near", "different"),
    "sex": ("same", "different"),
    "location": ("same", "different"),
    "phone": ("same", "different"),
}


class IdentityRuleError(ConfigError):
    """The rule file is not valid; the message names ``file:line``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    """One comparison level: P(level | same person) and P(level | different people)."""

    m: float = Field(gt=0, le=1)
    u: float = Field(gt=0, le=1)

    @property
    def weight(self) -> float:
        """The level's Fellegi–Sunter weight, log2(m/u)."""
        return math.log2(self.m / self.u)


class Variant(_Strict):
    """A spelling variant folded before comparison (``from`` is replaced by ``to`` in folded names)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from", min_length=1)
    to: str


class Deterministic(_Strict):
    """A rule that decides alone: every ``agree`` field equal, and no ``unless_different`` field different."""

    name: str
    agree: list[Literal["national_id", "phone", "birthdate", "given", "family", "sex", "location"]] = Field(
        min_length=1
    )
    unless_different: list[Literal["given", "family", "sex", "birthdate"]] = []


class Thresholds(_Strict):
    """Total weight at or above ``link``: linked; at or above ``review``: a review task."""

    link: float
    review: float

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.link:
            raise ValueError("review must not be above link")
        return self


class Rules(_Strict):
    """A deployment's identity rules (see README "Identity")."""

    national_id_systems: list[str] = []
    phone_suffix_digits: int = Field(8, ge=5, le=15)
    max_block_size: int = Field(200, ge=2)
    similarity: dict[Literal["close", "similar"], float] = {"close": 0.94, "similar": 0.85}
    variants: list[Variant] = []
    #: Words that stand in for a given name not chosen yet ("Baby Nakato", "Mtoto wa Aisha"):
    #: dropped from given names (folded, before the variants), so they agree on nothing.
    placeholder_given: frozenset[str] = frozenset({
        "baby", "babe", "infant", "newborn", "unknown", "unnamed", "boy", "girl", "of", "wa", "ya",
        "mtoto", "bebe", "enfant", "nino", "nina", "omwana", "umwana", "twin",
    })  # fmt: skip
    deterministic: list[Deterministic] = []
    #: Where the weights come from: ``fields`` (m/u set by hand) or ``estimated`` (m/u estimated
    #: from the stored Patients by EM, written into ``estimated`` by ``gateway identity estimate --write``).
    model: Literal["fields", "estimated"] = "fields"
    estimated: dict[str, dict[str, Level]] | None = None

    #: Fields whose "different" level keeps a pair out of auto-linking (twins share everything else).
    never_link_when_different: list[Literal["given", "family", "sex", "birthdate"]] = ["given"]
    fields: dict[str, dict[str, Level]]
    thresholds: Thresholds
    #: Which member's value each element of a golden record takes (``gateway.identity.survivorship``).
    survivorship: Survivorship = Survivorship()
    # log2(m/u) of every (field, level), computed once: scoring reads it for every candidate pair.
    _weights: dict[tuple[str, str], float] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Compute the weight table."""
        self._weights = {(name, level): value.weight for name, levels in self.levels().items()
                         for level, value in levels.items()}

    @field_validator("placeholder_given")
    @classmethod
    def _fold_placeholders(cls, words: frozenset[str]) -> frozenset[str]:
        return frozenset(word.lower() for word in words)  # compared with folded (lower-case) names

    @field_validator("fields", "estimated")
    @classmethod
    def _levels(cls, fields: dict[str, dict[str, Level]] | None) -> dict[str, dict[str, Level]] | None:
        for name, levels in (fields or {}).items():
            if name not in FIELD_LEVELS:
                raise ValueError(f"unknown field {name!r} (known: {', '.join(FIELD_LEVELS)})")
            missing = [level for level in FIELD_LEVELS[name] if level not in levels]
            extra = [level for level in levels if level not in FIELD_LEVELS[name]]
            if missing or extra:
                raise ValueError(
                    f"field {name!r} needs exactly the levels {', '.join(FIELD_LEVELS[name])}"
                    + (f" (missing {', '.join(missing)})" if missing else "")
                    + (f" (unknown {', '.join(extra)})" if extra else "")
                )
        return fields

    @model_validator(mode="after")
    def _estimated_present(self) -> Rules:
        if self.model == "estimated" and not self.estimated:
            raise ValueError("model: estimated needs the estimated section (gateway identity estimate --write)")
        return self

    def levels(self) -> dict[str, dict[str, Level]]:
        """The m/u in use: ``estimated`` when ``model: estimated``, else ``fields``."""
        return self.estimated if self.model == "estimated" and self.estimated else self.fields

    @model_validator(mode="after")
    def _similarity(self) -> Rules:
        if self.similarity.get("close", 0.94) < self.similarity.get("similar", 0.85):
            raise ValueError("similarity.close must not be below similarity.similar")
        return self

    def weight(self, field: str, level: str | None) -> float:
        """The weight of ``field`` at ``level``; 0 when the field is missing on either side or not modelled."""
        if level is None:
            return 0.0
        return self._weights.get((field, level), 0.0)

    def weight_table(self) -> dict[tuple[str, str], float]:
        """log2(m/u) by (field, level), for scoring many pairs (read it once per pair, not per field)."""
        return self._weights


def load_rules(path: Path) -> Rules:
    """Read one rule file; ``IdentityRuleError`` naming ``file:line`` when it does not fit."""
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        raise IdentityRuleError(f"{path}:{exc.line}: {exc.message}") from exc
    except OSError as exc:
        raise IdentityRuleError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        return Rules.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = doc.data_path(error["loc"])
            message = "unknown field (check the spelling)" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{path}:{doc.line_of(where)}: {format_path(where) or '(top)'}: {message}")
        raise IdentityRuleError("\n".join(problems)) from exc


def load_rules_dir(directory: Path) -> Rules | None:
    """The one rule file of ``directory`` (``*.yaml``), or None when there is none."""
    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if not files:
        return None
    if len(files) > 1:
        raise IdentityRuleError(f"{directory}: one rule file expected, found {', '.join(f.name for f in files)}")
    return load_rules(files[0])
