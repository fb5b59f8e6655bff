"""Delivery attempts as message log lines (``gateway.store.MessageEntry``), one per job tried.

The worker hands them to a ``Journal`` (the composition root passes the message log writer's
``note``); lines name the destination, the resource, its patient and the reason code, never
the payload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.connectors import Job
from gateway.delivery.queue import Ack, Bury, Nack, Settlement, Split
from gateway.store import MessageEntry

Journal = Callable[[Sequence[MessageEntry]], None]


def _line(job: Job, at: float, status: str, detail: str | None) -> MessageEntry:
    patient = job.key.removeprefix("Patient/") if job.key.startswith("Patient/") else None
    attempt = f"attempt {job.attempts + 1}"
    return MessageEntry(at, "delivery", job.destination, status, patient, f"{job.ref}/_history/{job.version}",
                        job.id, f"{attempt}; {detail}" if detail else attempt)


def attempt_lines(settlements: Sequence[Settlement], at: float) -> list[MessageEntry]:
    """One line per settled attempt (a job given back untried at shutdown made no attempt)."""
    lines: list[MessageEntry] = []
    for item in settlements:
        if isinstance(item, Ack):
            lines.append(_line(item.job, at, "delivered", None))
        elif isinstance(item, Nack):
            lines.append(_line(item.job, at, "retrying", item.reason))
        elif isinstance(item, Bury):
            status = item.response.status if item.response is not None else None
            detail = item.reason if status is None else f"{item.reason} (HTTP {status})"
            lines.append(_line(item.job, at, "dead", detail))
        elif isinstance(item, Split):
            refused = ", ".join(part.reason for part in item.parts[:5])
            lines.append(_line(item.job, at, "partial", f"{len(item.parts)} part(s) refused: {refused}"))
    return lines
