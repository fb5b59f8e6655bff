"""JSON encoding of jobs and dead-letter details, shared by both queue backends (never pickle)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway import jsonio
from gateway.connectors import Job, RecordedRequest, RecordedResponse


def encode_job(job: Job) -> bytes:
    """The immutable part of a job (everything but payload, attempts, receipt and queue time)."""
    fields = [job.destination, job.seq, job.resource_type, job.resource_id, job.version, job.op, job.key, job.source]
    return jsonio.dumps([*fields, True] if job.backfill else fields)  # live jobs keep the older, shorter form


def decode_job(
    data: bytes | str,
    *,
    job_id: str,
    payload: bytes,
    attempts: int,
    enqueued_at: float,
    receipt: str,
) -> Job:
    """Rebuild a job from ``encode_job`` output and the queue's mutable fields."""
    destination, seq, rtype, rid, version, op, key, source, *lane = jsonio.loads(data)
    return Job(
        id=job_id,
        destination=destination,
        seq=int(seq),
        resource_type=rtype,
        resource_id=rid,
        version=int(version),
        op=op,
        key=key,
        payload=payload,
        source=source,
        enqueued_at=enqueued_at,
        attempts=attempts,
        receipt=receipt,
        backfill=bool(lane and lane[0]),
    )


def job_id(destination: str, seq: int) -> str:
    """The deterministic id of the job delivering change ``seq`` to ``destination``."""
    return f"{destination}:{seq}"


def ref_of(job: Job) -> str:
    """The coalescing identity of a job's resource within its destination."""
    return f"{job.resource_type}/{job.resource_id}"


def encode_detail(
    detail: str | None, request: RecordedRequest | None, response: RecordedResponse | None
) -> bytes:
    """A dead letter's detail, request and response as JSON."""
    return jsonio.dumps(
        {
            "detail": detail,
            "request": dataclasses.asdict(request) if request is not None else None,
            "response": dataclasses.asdict(response) if response is not None else None,
        }
    )


def decode_detail(
    data: bytes | str | None,
) -> tuple[str | None, RecordedRequest | None, RecordedResponse | None]:
    """Inverse of ``encode_detail`` (tolerates a missing value)."""
    if not data:
        return None, None, None
    value: dict[str, Any] = jsonio.loads(data)
    request = value.get("request")
    response = value.get("response")
    return (
        value.get("detail"),
        RecordedRequest(**request) if request else None,
        RecordedResponse(**response) if response else None,
    )
