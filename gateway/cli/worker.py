"""``python -m gateway.cli.worker``: the same command as ``gateway worker``.

A standalone entry point for process supervisors and tests (it needs no other CLI wiring).
"""

from __future__ import annotations

import typer

from gateway.cli.queue import worker_command


def main() -> None:
    """Run ``gateway worker`` with this process's arguments."""
    typer.run(worker_command)


if __name__ == "__main__":
    main()
