"""Sandbox control (not part of DHIS2): faults, outages, statistics, received objects, reset.

These endpoints live under ``/sandbox/`` and are never subject to faults or
authentication, so a test can switch a failing sandbox back to healthy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from dhis2_sandbox.context import ApiError, StateDep
from dhis2_sandbox.faults import FaultConfig, FaultMode, OutageWindow

__all__ = ["router"]

router = APIRouter(prefix="/sandbox", tags=["sandbox"])


class OutageRequest(BaseModel):
    """An outage starting now."""

    seconds: float = Field(gt=0, le=86_400)
    mode: FaultMode = "502"


@router.get("/faults")
def get_faults(state: StateDep) -> FaultConfig:
    """The fault configuration in force."""
    return state.faults.config


@router.put("/faults")
def put_faults(config: FaultConfig, state: StateDep) -> FaultConfig:
    """Replace the fault configuration."""
    state.faults.configure(config)
    return state.faults.config


@router.post("/outages")
def add_outage(request: OutageRequest, state: StateDep) -> FaultConfig:
    """Start an outage window now."""
    state.faults.add_outage(OutageWindow.starting_now(request.seconds, request.mode))
    return state.faults.config


@router.delete("/outages")
def end_outages(state: StateDep) -> FaultConfig:
    """End every outage window."""
    state.faults.clear_outages()
    return state.faults.config


@router.get("/stats")
def stats(state: StateDep) -> dict[str, Any]:
    """Request and fault counts, and what the store holds."""
    return {
        "faults": dict(state.faults.stats),
        "stored": state.store.counts(),
        "revisions": state.store.revisions(),
        "version": state.settings.version,
    }


@router.get("/received")
def received(state: StateDep) -> dict[str, dict[str, int]]:
    """How many import requests carried each tracker object, by kind and UID."""
    found: dict[str, dict[str, int]] = {"trackedEntities": {}, "enrollments": {}, "events": {}}
    for (kind, uid), count in sorted(state.received.items()):
        found[kind][uid] = count
    return found


_KINDS = {"trackedEntities": "tracked_entity", "enrollments": "enrollment", "events": "event"}


@router.get("/accepted/{kind}")
def accepted(kind: str, state: StateDep) -> dict[str, str]:
    """When each live tracker object of ``kind`` was first accepted (UTC ``YYYY-MM-DDTHH:MM:SS.mmm``), by UID.

    A load test measures delivery lag here, at the destination: acceptance minus the source's commit.
    """
    table = _KINDS.get(kind)
    if table is None:
        raise ApiError(404, f"Unknown kind: {kind} (one of {', '.join(_KINDS)})")
    return state.store.accepted_at(table)


@router.post("/reset")
def reset(state: StateDep) -> dict[str, str]:
    """Forget all accepted data, jobs and fault counts."""
    state.store.reset()
    state.jobs.forget()
    state.aggregate_tasks.clear()
    state.faults.stats.clear()
    state.received.clear()
    return {"status": "reset"}


@router.post("/restart")
def restart(state: StateDep) -> dict[str, str]:
    """Forget async job reports, as a DHIS2 restart does (stored data stays)."""
    state.jobs.forget()
    state.aggregate_tasks.clear()
    return {"status": "restarted"}
