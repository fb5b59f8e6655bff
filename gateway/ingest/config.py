"""The ``sources:`` section: the community-care systems that send records to ``/ingest/{name}``."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

__all__ = ["SourceConfig"]


class SourceConfig(BaseModel):
    """A community-care system that sends records to ``/ingest/{name}``."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: str = Field(pattern=r"^(commcare|cht|odk|kobo|json|csv)$")
    mapping: str
    quarantine_status: int = Field(202, description="HTTP status for a quarantined record (202 or 422)")

    @field_validator("quarantine_status")
    @classmethod
    def _status(cls, value: int) -> int:
        if value not in (202, 422):
            raise ValueError("must be 202 or 422")
        return value
