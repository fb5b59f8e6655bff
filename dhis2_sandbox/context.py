"""The sandbox's shared state and the FastAPI dependencies that hand it to routes."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from dhis2_sandbox.auth import AuthFailure, SandboxUser, authenticate, default_users
from dhis2_sandbox.catalog import Catalog
from dhis2_sandbox.errors import SandboxError
from dhis2_sandbox.faults import FaultSchedule
from dhis2_sandbox.storage import SandboxStore
from dhis2_sandbox.tracker_jobs import TrackerJobs

__all__ = [
    "ApiError",
    "SandboxSettings",
    "SandboxState",
    "StateDep",
    "UserDep",
    "WriterDep",
    "parse_version",
]


class SandboxSettings(BaseModel):
    """How the sandbox presents itself: DHIS2 version, accounts, async job pace, metadata."""

    model_config = ConfigDict(frozen=True)

    version: str = Field("2.41.0", pattern=r"^2\.\d{2}(\.\d+)*$")
    users: tuple[SandboxUser, ...] = Field(default_factory=lambda: tuple(default_users()))
    job_delay: float = Field(0.0, ge=0, le=60, description="seconds before an async tracker job starts")
    metadata_path: Path | None = Field(None, description="metadata JSON instead of the bundled demo set")


def parse_version(text: str) -> tuple[int, int]:
    """``"2.41.0"`` → ``(2, 41)``."""
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


@dataclass
class SandboxState:
    """Everything routes need, owned by the app."""

    catalog: Catalog
    store: SandboxStore
    settings: SandboxSettings
    faults: FaultSchedule
    jobs: TrackerJobs
    version: tuple[int, int] = field(init=False)
    # One import at a time: DHIS2 serialises conflicting writes with database locks; the
    # sandbox keeps validation and commit of one import together instead.
    import_lock: threading.Lock = field(default_factory=threading.Lock)
    aggregate_tasks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # How often each tracker object arrived in an import request (whatever became of it), so
    # tests can tell a resent object from one sent once: ("trackedEntities", uid) → count.
    received: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.version = parse_version(self.settings.version)

    def capture_roots(self, user: SandboxUser) -> frozenset[str] | None:
        """The user's capture scope roots (None: everything)."""
        return None if user.capture_org_units is None else frozenset(user.capture_org_units)


class ApiError(SandboxError):
    """Raised by routes and dependencies; rendered as a DHIS2 WebMessage."""

    def __init__(self, status: int, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(_state)]


def _user(request: Request, state: StateDep) -> SandboxUser:
    found = authenticate(request.headers.get("authorization"), list(state.settings.users))
    if isinstance(found, AuthFailure):
        raise ApiError(found.status, found.message)
    return found


UserDep = Annotated[SandboxUser, Depends(_user)]


def _writer(user: UserDep) -> SandboxUser:
    if not user.can_write:
        raise ApiError(403, "You don't have the proper permissions to create this object.")
    return user


WriterDep = Annotated[SandboxUser, Depends(_writer)]
