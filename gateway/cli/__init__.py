"""The ``gateway`` command line: one Typer app (``main``) and a module per command group.

Every module here imports only Typer and the standard library at import time, so
``gateway --help`` stays fast; each command imports what it runs when it runs.
"""

from __future__ import annotations

from gateway.cli.main import app, main

__all__ = ["app", "main"]
