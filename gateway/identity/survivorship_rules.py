"""The ``survivorship`` section of the rule file: a strategy per golden-record element (see ``survivorship``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Strategy = Literal["most_recent", "most_frequent", "source_priority", "non_estimated", "union"]
Element = Literal[
    "name", "gender", "birthDate", "identifier", "telecom", "address", "managingOrganization",
    "maritalStatus", "communication", "deceasedBoolean", "deceasedDateTime",
]  # fmt: skip


class Survivorship(BaseModel):
    """The strategy per golden-record element (the strategies: ``gateway.identity.survivorship``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_priority: list[str] = []  # meta.source values (or prefixes), most trusted first
    elements: dict[Element, Strategy] = {
        "name": "most_recent",
        "gender": "most_frequent",
        "birthDate": "non_estimated",
        "identifier": "union",
        "telecom": "union",
        "address": "most_recent",
        "managingOrganization": "most_recent",
    }
