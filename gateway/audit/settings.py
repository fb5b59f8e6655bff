"""``AuditSettings``: the ``audit`` section of the gateway's settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AuditSettings(BaseModel):
    """The audit trail: what is kept, for how long, and how it is written."""

    enabled: bool = Field(True, description="record an AuditEvent for every access")
    retention_days: int = Field(365, ge=0, description="delete AuditEvents older than this; 0 keeps them forever")
    flush_seconds: float = Field(1.0, gt=0, le=60, description="write buffered events at least this often")
    batch_size: int = Field(500, ge=1, le=10_000, description="events per store transaction")
    buffer_size: int = Field(10_000, ge=1, description="events held in memory before requests wait")
    full_wait_seconds: float = Field(
        2.0, ge=0, le=60, description="how long a request waits for room in a full buffer before the oldest is dropped"
    )
    max_entities: int = Field(50, ge=2, le=1000, description="entities listed in one AuditEvent (the rest counted)")
    purge_every_seconds: float = Field(86_400, gt=0, description="how often old AuditEvents are purged")


class MessageLogSettings(BaseModel):
    """The message log the operator console shows: one line per record received and per delivery attempt."""

    enabled: bool = Field(True, description="log every received record and every delivery attempt")
    retention_days: int = Field(30, ge=0, description="delete lines older than this; 0 keeps them forever")
    flush_seconds: float = Field(1.0, gt=0, le=60, description="write buffered lines at least this often")
    buffer_size: int = Field(50_000, ge=100, description="lines held in memory; past it the oldest is dropped")
    purge_every_seconds: float = Field(3_600, gt=0, description="how often old lines are purged")
