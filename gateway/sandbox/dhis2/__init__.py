"""A DHIS2 Web API sandbox: the subset the gateway's DHIS2 connector uses, with faults.

    from gateway.sandbox.dhis2 import FaultConfig, SandboxServer, create_sandbox_app

    app = create_sandbox_app(None, FaultConfig(error_rate=0.1, seed=1))
    with SandboxServer(app) as server:      # uvicorn on a free loopback port
        ...  # point a client at server.base_url, with DEFAULT_TOKEN

See ``app`` for the endpoints, ``faults`` for the fault model and ``storage`` for what is
kept of accepted data.
"""

from __future__ import annotations

from gateway.sandbox.dhis2.app import create_sandbox_app
from gateway.sandbox.dhis2.auth import DEFAULT_TOKEN, SandboxUser, make_token
from gateway.sandbox.dhis2.context import SandboxSettings, SandboxState
from gateway.sandbox.dhis2.faults import FaultConfig, OutageWindow
from gateway.sandbox.dhis2.server import SandboxServer, serve

__all__ = [
    "DEFAULT_TOKEN",
    "FaultConfig",
    "OutageWindow",
    "SandboxServer",
    "SandboxSettings",
    "SandboxState",
    "SandboxUser",
    "create_sandbox_app",
    "make_token",
    "serve",
]
