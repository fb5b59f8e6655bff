"""``python -m gateway.cli.worker``: the same command as ``gateway worker``.

A standalone entry point for process supervisors and tests (it needs no other CLI wiring).
"""

from __future__ import annotations

import logging

import typer

from gateway.cli.queue import worker_command


def main() -> None:
    """Run ``gateway worker`` with this process's arguments."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.run(worker_command)


if __name__ == "__main__":
    main()
