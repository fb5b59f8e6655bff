"""The asynchronous tracker import flow: submit, poll ``/jobs/{id}``, fetch ``/report``.

A 200 "Tracker job added" says nothing about the data: validation has not run yet. The
flow polls the job's notifications with a growing interval until one is ``completed``,
then reads the ImportReport. Reports live in DHIS2's memory: a 404 for the job or its
report means it is gone (restart) and the outcome is unknown — ``Dhis2JobLost``; running
out of time is ``Dhis2JobTimeout``. Both are safe to resubmit with deterministic UIDs and
``importStrategy=CREATE_AND_UPDATE``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from gateway import jsonio
from gateway.connectors.classify import parse_retry_after
from gateway.connectors.dhis2.client import Dhis2Client, http_error
from gateway.connectors.dhis2.errors import (
    Dhis2JobLost,
    Dhis2JobTimeout,
    Dhis2ProtocolError,
    Dhis2TransportError,
)
from gateway.connectors.dhis2.reports import job_completed, job_id_of

__all__ = ["AsyncSubmission", "run_async_import"]

Sleep = Callable[[float], Awaitable[None]]


class AsyncSubmission:
    """The answer to an async submission: either a job id or a response to classify as is."""

    def __init__(self, response: httpx.Response, job_id: str | None) -> None:
        self.response = response
        self.job_id = job_id


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return jsonio.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise Dhis2ProtocolError(f"{what}: the answer is not JSON") from exc


async def submit_async(
    client: Dhis2Client, payload: dict[str, Any], params: Mapping[str, str]
) -> AsyncSubmission:
    """POST with ``async=true``; a non-200 answer is returned for classification."""
    response = await client.post_tracker(payload, {**params, "async": "true"})
    if response.status_code != 200:
        return AsyncSubmission(response, None)
    return AsyncSubmission(response, job_id_of(_json(response, "POST /api/tracker")))


async def wait_for_report(
    client: Dhis2Client,
    job_id: str,
    *,
    poll_interval: float,
    timeout: float,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> httpx.Response:
    """Poll until the job completes; return the report response (200)."""
    deadline = clock() + timeout
    interval = poll_interval
    while True:
        notes, wait = await _poll(client.tracker_job(job_id))
        if notes is not None:
            if notes.status_code == 404:
                raise Dhis2JobLost(f"tracker job {job_id} is gone")
            if notes.status_code != 200:
                raise http_error("/api/tracker/jobs", notes)
            if job_completed(_json(notes, "GET /api/tracker/jobs")):
                report, wait = await _poll(client.tracker_job_report(job_id))
                if report is not None:
                    if report.status_code == 404:
                        raise Dhis2JobLost(f"the report of tracker job {job_id} is gone")
                    if report.status_code != 200:
                        raise http_error("/api/tracker/jobs/report", report)
                    return report
        # A 429/503 that names its wait is obeyed: polling sooner only earns another refusal.
        nap = max(interval, wait or 0.0)
        if clock() + nap > deadline:
            raise Dhis2JobTimeout(f"tracker job {job_id} did not complete in {timeout:.0f} s")
        await sleep(nap)
        interval = min(interval * 1.5, 5.0)


async def _poll(request: Awaitable[httpx.Response]) -> tuple[httpx.Response | None, float | None]:
    """A poll's answer, or None and the wait DHIS2 asked for when it failed transiently.

    The job runs on in DHIS2 whatever the poll met, so a transient failure means "poll again".
    """
    try:
        response = await request
    except Dhis2TransportError:
        return None, None
    if response.status_code >= 500 or response.status_code in (408, 429):
        return None, parse_retry_after(response.headers.get("retry-after"), now=time.time())
    return response, None


async def run_async_import(
    client: Dhis2Client,
    payload: dict[str, Any],
    params: Mapping[str, str],
    *,
    poll_interval: float,
    timeout: float,
    sleep: Sleep = asyncio.sleep,
) -> httpx.Response:
    """Submit asynchronously and return the report response, or the refusal to classify."""
    submission = await submit_async(client, payload, params)
    if submission.job_id is None:
        return submission.response
    return await wait_for_report(
        client, submission.job_id, poll_interval=poll_interval, timeout=timeout, sleep=sleep
    )
