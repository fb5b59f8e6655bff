"""Services that run inside ``gateway serve`` next to the API (hooks for ``create_app``)."""

from __future__ import annotations

from gateway.api.app import Hook
from gateway.settings import Settings


def service_hooks(settings: Settings) -> list[Hook]:
    """The lifespan hooks ``gateway serve`` starts for these settings."""
    hooks: list[Hook] = []
    return hooks
