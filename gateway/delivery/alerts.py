"""Alerts: a webhook told when delivery needs a person (the ``delivery.alerts`` section).

    delivery:
      alerts:
        webhook_url: https://chat.example.org/hooks/gateway   # POSTed one JSON object per alert
        circuit_open_minutes: 10     # a circuit not closed for this long
        lag_seconds: 900             # the oldest undelivered change is older than this
        lag_changes: 5000            # or this many changes wait
        dead_letters: 1              # dead letters grew by at least this since the last check
        status_unreadable_minutes: 5 # the queue or store could not be read for this long
        check_interval: 60s

Each check reads the same status as ``gateway queue status``. An alert is sent when its
condition starts (``"state": "firing"``), again every ``repeat_after`` while it lasts,
and once when it ends (``"state": "resolved"``); dead-letter growth only fires. The body
names the alert, the destination, the figure and the threshold: never a payload or a
patient. A webhook that fails is logged and tried again at the next check: the monitor counts an
alert as told only once the webhook took it (``AlertMonitor.sent``), so an alert lost to a chat
server that was down with the rest is sent again, not an hour later (``repeat_after``) or, for a
dead-letter growth or a resolution, never.

While the status cannot be read (the queue or the store unreachable) nothing else can be checked,
so that is an alert of its own, ``status_unreadable`` for destination ``*``, naming the error type.

The API process (``gateway serve``) runs the checks, so lag is noticed when no worker runs
at all; ``gateway worker`` does not.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.clock import Clock
from gateway.connectors import Duration
from gateway.delivery.queue import reraise_if_cancelled

log = logging.getLogger(__name__)


class AlertSettings(BaseModel):
    """When to call the alert webhook (``delivery.alerts``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: str | None = Field(None, pattern=r"^https?://", description="POSTed one JSON object per alert")
    circuit_open_minutes: float | None = Field(10.0, gt=0, description="a circuit not closed for this long")
    lag_seconds: Duration | None = Field(900.0, gt=0, description="the oldest undelivered change is older")
    lag_changes: int | None = Field(None, ge=1, description="more changes than this wait for delivery")
    dead_letters: int | None = Field(1, ge=1, description="dead letters grew by at least this since the last check")
    status_unreadable_minutes: float | None = Field(
        5.0, gt=0, description="the delivery status (queue or store) could not be read for this long"
    )
    check_interval: Duration = Field(60.0, gt=0)
    repeat_after: Duration = Field(3600.0, gt=0, description="send a still-firing alert again this often")
    timeout: Duration = Field(10.0, gt=0)


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification."""

    alert: str  # circuit_open | delivery_lag | dead_letters | status_unreadable (destination "*")
    destination: str
    state: str  # firing | resolved
    summary: str
    value: float
    threshold: float

    def as_json(self, at: float) -> dict[str, Any]:
        """The webhook body."""
        return {"source": "chw-gateway", "alert": self.alert, "destination": self.destination, "state": self.state,
                "summary": self.summary, "value": self.value, "threshold": self.threshold, "at": at}


@dataclass
class AlertMonitor:
    """Compares status rows with the thresholds, remembering what the webhook was told.

    ``evaluate`` says what to send now; ``sent`` records what the webhook took. An alert that
    was not taken is still due at the next ``evaluate``: a firing condition fires again, a
    resolution resolves again and a dead-letter growth counts from the last growth told."""

    settings: AlertSettings
    clock: Clock
    not_closed_since: dict[str, float] = field(default_factory=dict)
    dead_seen: dict[str, int] = field(default_factory=dict)  # dead letters as last told (or below the threshold)
    dead_now: dict[str, int] = field(default_factory=dict)  # dead letters at the last evaluate
    firing: dict[tuple[str, str], float] = field(default_factory=dict)  # (alert, destination) -> last sent
    unreadable_since: float | None = None  # the first of the checks in a row that could not read the status

    def sent(self, alerts: list[Alert]) -> None:
        """The webhook took ``alerts`` (of the last ``evaluate``)."""
        now = self.clock.now()
        for alert in alerts:
            key = (alert.alert, alert.destination)
            if alert.alert == "dead_letters":
                self.dead_seen[alert.destination] = self.dead_now[alert.destination]
            elif alert.state == "firing":
                self.firing[key] = now
            else:
                self.firing.pop(key, None)

    def unreadable(self, error: str) -> list[Alert]:
        """The alerts to send now that the status could not be read (``error``: the exception's type)."""
        now = self.clock.now()
        if self.unreadable_since is None:
            self.unreadable_since = now
        limit = self.settings.status_unreadable_minutes
        if limit is None:
            return []
        minutes = (now - self.unreadable_since) / 60
        return self._condition(
            "status_unreadable", "*", minutes >= limit, now,
            f"delivery status unreadable for {minutes:.1f} min ({error})", minutes, limit,
        )  # fmt: skip

    def evaluate(self, rows: list[Any]) -> list[Alert]:
        """The alerts to send now for ``rows`` (``DestinationStatus``); ``sent`` records those taken."""
        now = self.clock.now()
        alerts: list[Alert] = []
        self.unreadable_since = None
        if self.settings.status_unreadable_minutes is not None:  # read again: resolves a firing one
            alerts += self._condition("status_unreadable", "*", False, now, "", 0.0,
                                      self.settings.status_unreadable_minutes)  # fmt: skip
        for row in rows:
            name, stats = row.name, row.stats
            if stats.circuit == "closed":
                self.not_closed_since.pop(name, None)
            else:
                self.not_closed_since.setdefault(name, now)
            if self.settings.circuit_open_minutes is not None:
                minutes = (now - self.not_closed_since[name]) / 60 if name in self.not_closed_since else 0.0
                alerts += self._condition(
                    "circuit_open", name, minutes >= self.settings.circuit_open_minutes, now,
                    f"circuit of {name} not closed for {minutes:.1f} min", minutes, self.settings.circuit_open_minutes,
                )  # fmt: skip
            lag_limit, lag_value, lag_over = self._lag(row)
            if lag_limit is not None:
                alerts += self._condition(
                    "delivery_lag", name, lag_over, now, f"delivery to {name} lags: {lag_value:g}", lag_value, lag_limit
                )  # fmt: skip
            if self.settings.dead_letters is not None:
                before = self.dead_seen.get(name)
                self.dead_now[name] = stats.dead
                grown = stats.dead - before if before is not None else 0
                if grown >= self.settings.dead_letters:  # the baseline moves once the webhook has it
                    alerts.append(Alert("dead_letters", name, "firing", f"{grown} new dead letters for {name}"
                                        f" ({stats.dead} in all)", grown, self.settings.dead_letters))  # fmt: skip
                else:
                    self.dead_seen[name] = stats.dead
        return alerts

    def _lag(self, row: Any) -> tuple[float | None, float, bool]:
        seconds, changes = self.settings.lag_seconds, self.settings.lag_changes
        if seconds is not None and row.lag_seconds is not None and row.lag_seconds > seconds:
            return seconds, round(row.lag_seconds, 1), True
        if changes is not None and row.lag_changes is not None and row.lag_changes > changes:
            return changes, row.lag_changes, True
        limit = seconds if seconds is not None else changes
        return (None if limit is None else float(limit)), 0.0, False

    def _condition(
        self, alert: str, name: str, over: bool, now: float, summary: str, value: float, threshold: float
    ) -> list[Alert]:
        key = (alert, name)
        if over:
            last = self.firing.get(key)
            if last is None or now - last >= self.settings.repeat_after:
                return [Alert(alert, name, "firing", summary, round(value, 3), threshold)]
        elif key in self.firing:
            return [Alert(alert, name, "resolved", f"{alert} of {name} resolved", round(value, 3), threshold)]
        return []


async def post_alerts(
    alerts: list[Alert], settings: AlertSettings, clock: Clock, client: httpx.AsyncClient
) -> list[Alert]:
    """POST each alert to the webhook; those it accepted (failures are logged)."""
    sent: list[Alert] = []
    if settings.webhook_url is None:
        return sent
    for alert in alerts:
        try:
            body = alert.as_json(clock.now())
            response = await client.post(settings.webhook_url, json=body, timeout=settings.timeout)
            response.raise_for_status()
            sent.append(alert)
        except httpx.HTTPError as exc:
            reraise_if_cancelled(exc)
            log.warning("alert %s for %s not delivered to the webhook (%s)", alert.alert, alert.destination,
                        type(exc).__name__)  # fmt: skip
    return sent


async def run_alerts(admin: Any, settings: AlertSettings, clock: Clock, client: httpx.AsyncClient) -> None:
    """Check every ``check_interval`` until cancelled (``admin`` is a ``DeliveryAdmin``)."""
    monitor = AlertMonitor(settings, clock)
    while True:
        try:
            try:
                alerts = monitor.evaluate(await admin.status())
            except Exception as exc:  # the queue or store unreachable: an alert once it lasts
                reraise_if_cancelled(exc)
                log.warning("alert check failed (%s)", type(exc).__name__)
                alerts = monitor.unreadable(type(exc).__name__)
            if alerts:
                monitor.sent(await post_alerts(alerts, settings, clock, client))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never end the checks
            reraise_if_cancelled(exc)
            log.warning("alert check failed (%s)", type(exc).__name__)
        await clock.sleep(settings.check_interval)
