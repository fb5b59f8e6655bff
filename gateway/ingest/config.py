"""The ``sources:`` section: the community-care systems that send records to ``/ingest/{name}``,
or that the gateway pulls records from (``kind: odk-central|commcare-api|cht-changes|kobo-api``
with a ``pull:`` section, validated by ``gateway.pull``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

__all__ = ["PULL_KINDS", "SourceConfig"]

#: Sources the gateway reads from their APIs on a schedule instead of waiting for pushes.
PULL_KINDS = ("odk-central", "commcare-api", "cht-changes", "kobo-api")


class SourceConfig(BaseModel):
    """A community-care system that sends records to ``/ingest/{name}``."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: str = Field(pattern=r"^(commcare|cht|odk|kobo|json|csv|odk-central|commcare-api|cht-changes|kobo-api)$")
    mapping: str
    quarantine_status: int = Field(202, description="HTTP status for a quarantined record (202 or 422)")
    pull: dict[str, Any] | None = Field(
        None, description="pulled kinds: connection, credentials, form/asset ids, page size, interval"
    )

    @model_validator(mode="after")
    def _pull_section(self) -> SourceConfig:
        if self.kind in PULL_KINDS and self.pull is None:
            raise ValueError(f"kind {self.kind} pulls records: it needs a pull: section (base_url, ...)")
        if self.kind not in PULL_KINDS and self.pull is not None:
            raise ValueError(f"kind {self.kind} is pushed to /ingest/{self.name}: pull: is for {', '.join(PULL_KINDS)}")
        return self

    @field_validator("quarantine_status")
    @classmethod
    def _status(cls, value: int) -> int:
        if value not in (202, 422):
            raise ValueError("must be 202 or 422")
        return value
