"""Services that run inside ``gateway serve`` next to the API (hooks for ``create_app``)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.api.app import Hook
from gateway.settings import Settings


def service_hooks(settings: Settings, environ: Mapping[str, str]) -> list[Hook]:
    """The lifespan hooks ``gateway serve`` starts: the delivery outbox and worker.

    ``environ`` supplies destination secrets named in the config (the CLI passes
    ``os.environ``; nothing else in the package reads the environment).
    """
    from gateway.api.admin_delivery import delivery_hook

    return [delivery_hook(environ)]
