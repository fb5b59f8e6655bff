"""``gateway sandbox …`` commands: run a sandbox of an outside system in the foreground.

    gateway sandbox dhis2 --port 8081 --state ./dhis2-sandbox --error-rate 0.1

``gateway.cli.main`` mounts ``sandbox_app`` as the ``sandbox`` sub-command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["sandbox_app"]

sandbox_app = typer.Typer(help="Run sandboxes of the systems the gateway delivers to.", no_args_is_help=True)


@sandbox_app.callback()
def _group() -> None:
    """Run sandboxes of the systems the gateway delivers to."""
    # A callback keeps ``dhis2`` a sub-command even while it is the only one.


@sandbox_app.command("dhis2")
def dhis2(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 8081,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    state: Annotated[
        Path | None, typer.Option(help="directory or SQLite file for accepted data (default: in memory)")
    ] = None,
    version: Annotated[str, typer.Option(help="DHIS2 version to emulate")] = "2.41.0",
    latency_ms: Annotated[float, typer.Option(help="delay added to every /api request")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="share of requests DHIS2 answers with 500")] = 0.0,
    proxy_error_rate: Annotated[float, typer.Option(help="share answered 502/504 by the proxy")] = 0.0,
    reset_rate: Annotated[float, typer.Option(help="share of connections reset")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="random seed for reproducible faults")] = None,
    job_delay: Annotated[float, typer.Option(help="seconds before an async tracker job runs")] = 0.0,
    metadata: Annotated[Path | None, typer.Option(help="metadata JSON instead of the demo set")] = None,
) -> None:
    """Serve the DHIS2 sandbox (demo CHW metadata, tracker and aggregate imports)."""
    from dhis2_sandbox import DEFAULT_TOKEN, FaultConfig, SandboxSettings, create_sandbox_app, serve
    from gateway.cli.common import check_port_free

    check_port_free(host, port)
    faults = FaultConfig(
        latency_ms=latency_ms,
        error_rate=error_rate,
        proxy_error_rate=proxy_error_rate,
        reset_rate=reset_rate,
        seed=seed,
    )
    if state is not None and state.suffix == "":
        state.mkdir(parents=True, exist_ok=True)
    settings = SandboxSettings(version=version, job_delay=job_delay, metadata_path=metadata)
    app = create_sandbox_app(state, faults, settings)
    typer.echo(f"DHIS2 sandbox {version} on http://{host}:{port}/api (user admin/district)")
    typer.echo(f"  Authorization: ApiToken {DEFAULT_TOKEN}")
    typer.echo(f"  faults: PUT http://{host}:{port}/sandbox/faults   stats: GET /sandbox/stats")
    serve(app, host=host, port=port)
