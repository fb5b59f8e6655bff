"""``gateway referrals overdue``: mark referral Tasks nobody acted on in time, now.

The scheduler of ``gateway serve`` / ``gateway worker`` runs the same check every
``referral.check_interval``; the marked Tasks go back to the CHW's app through the
``cht-api`` / ``commcare-api`` destinations like any outcome.
"""

from __future__ import annotations

import time

import typer

from gateway.cli.common import ConfigOption, DevOption, settings_from

__all__ = ["referrals_app"]

referrals_app = typer.Typer(
    name="referrals", help="The referral loop: referral Tasks and their outcomes.", no_args_is_help=True,
    add_completion=False,
)  # fmt: skip


@referrals_app.command("overdue")
def overdue(config: ConfigOption = None, dev: DevOption = False) -> None:
    """Mark overdue the referral Tasks past their follow-up date (or authoredOn + referral.overdue_after)."""
    from gateway.connectors.referral import mark_overdue
    from gateway.store import open_store

    settings = settings_from(config, dev)
    store = open_store(settings.store_url)
    try:
        marked = mark_overdue(store, settings.referral, time.time())
    finally:
        store.close()
    typer.echo(f"{marked} referral(s) marked overdue")
