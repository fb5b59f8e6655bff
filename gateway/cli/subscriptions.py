"""``gateway subscriptions …``: the subscriptions (topic-based and classic R4) partner EMRs hold, for operators.

Clients manage their own through ``/fhir/Subscription``; an operator lists them (owner, topic or criteria,
status, events so far, failures) and can switch one off, e.g. when a partner's endpoint is gone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from gateway import jsonio
from gateway.cli.common import ConfigOption, DevOption, fail, settings_from, where

__all__ = ["subscriptions_app"]

subscriptions_app = typer.Typer(
    name="subscriptions", help="Subscriptions (rest-hook; topic-based or classic R4 criteria) held by API clients.",
    no_args_is_help=True, add_completion=False,
)


@subscriptions_app.command("list")
def list_subscriptions(
    config: ConfigOption = None,
    dev: DevOption = False,
    client: Annotated[str | None, typer.Option(help="Only this API client's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List subscriptions, oldest first: id, owner, topic, status, events so far, failed sends in a row."""

    from gateway.store import open_store

    settings = settings_from(config, dev)
    store = open_store(settings.store_url)
    try:
        found = store.subscription_list(owner=client)
    finally:
        store.close()
    for record in found:
        # The endpoint and headers stay out: headers may hold the partner's credentials.
        line = {"id": record.sid, "owner": record.owner, "topic": record.content.get("criteria"),
                "status": record.status, "events": record.events, "failures": record.failures,
                "error": record.error, "created": record.created.isoformat()}
        if as_json:
            typer.echo(jsonio.dumps(line).decode())
        else:
            error = f" ({record.error})" if record.error and record.status == "error" else ""
            typer.echo(f"{record.sid} {record.owner} {line['topic']} [{record.status}{error}]"
                       f" {record.events} event(s), {record.failures} failure(s)")
    if not found:
        typer.echo(f"no subscriptions ({where(settings)})", err=True)
    elif not as_json:
        typer.echo(f"{len(found)} subscription(s)")


@subscriptions_app.command("off")
def switch_off(
    sid: Annotated[str, typer.Argument(help="The subscription's id.", show_default=False)],
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Switch a subscription off: nothing more is matched or sent (its owner may re-activate it)."""
    from gateway.store import open_store

    settings = settings_from(config, dev)
    store = open_store(settings.store_url)
    try:
        changed = store.subscription_set_status(sid, "off", when=datetime.now(UTC))
    finally:
        store.close()
    if not changed:
        fail(f"no subscription {sid!r} ({where(settings)})", 1)
    typer.echo(f"subscription {sid} is off")
