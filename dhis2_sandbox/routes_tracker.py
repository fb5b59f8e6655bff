"""Tracker endpoints: ``POST /api/tracker`` (sync and async), job polling and exports."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dhis2_sandbox.context import ApiError, SandboxState, StateDep, UserDep, WriterDep
from dhis2_sandbox.tracker_import import ParamError, TrackerImportParams, TrackerImportResult
from dhis2_sandbox.tracker_import import run_tracker_import as _run_import
from dhis2_sandbox.tracker_payload import PayloadError, flatten
from dhis2_sandbox.webmessages import web_message

__all__ = ["router"]

router = APIRouter()

_EXPORTS = {
    "trackedEntities": ("tracked_entity", "TrackedEntity", "trackedEntity"),
    "enrollments": ("enrollment", "Enrollment", "enrollment"),
    "events": ("event", "Event", "event"),
}


def _locked(state: SandboxState, run: partial[TrackerImportResult]) -> TrackerImportResult:
    with state.import_lock:
        return run()


def _request_error(state: SandboxState, message: str) -> ApiError:
    # Request validation errors became 400 in 2.40; earlier versions answered 409.
    return ApiError(400 if state.version >= (2, 40) else 409, message)


@router.post("/api/tracker")
async def tracker_import(request: Request, state: StateDep, user: WriterDep) -> JSONResponse:
    """Import tracked entities, enrollments, events and relationships."""
    try:
        params = TrackerImportParams.from_query(request.query_params)
    except ParamError as exc:
        raise _request_error(state, str(exc)) from exc
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"JSON parse error: {exc.msg}") from exc
    try:
        flat = flatten(body)
    except PayloadError as exc:
        raise ApiError(400, str(exc)) from exc
    for kind, objects, key in (
        ("trackedEntities", flat.tracked_entities, "trackedEntity"),
        ("enrollments", flat.enrollments, "enrollment"),
        ("events", flat.events, "event"),
    ):
        state.received.update((kind, str(obj.get(key))) for obj in objects)
    run = partial(
        _run_import,
        flat,
        params,
        state.catalog,
        state.store,
        username=user.username,
        capture_roots=state.capture_roots(user),
        cascade_delete=user.cascade_delete,
        version=state.version,
        now=datetime.now(UTC).replace(tzinfo=None),
    )
    if params.run_async:
        job_id = state.jobs.submit(partial(_locked, state, run), params.as_job_data())
        response: dict[str, Any] = {"id": job_id, "location": f"{_base(request)}/api/tracker/jobs/{job_id}"}
        if state.version < (2, 41):
            response = {"responseType": "TrackerJob", **response}
        return web_message(200, "Tracker job added", status="OK", response=response)
    result = await anyio.to_thread.run_sync(_locked, state, run)
    return JSONResponse(result.report, status_code=409 if result.status == "ERROR" else 200)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/api/tracker/jobs/{job_id}")
def job_notifications(job_id: str, state: StateDep, user: UserDep) -> JSONResponse:
    """Notifications of an async import, newest first."""
    notes = state.jobs.notifications(job_id)
    if notes is None:
        raise ApiError(404, f"Job {job_id} does not exist", error_code="E1005")
    return JSONResponse(notes)


@router.get("/api/tracker/jobs/{job_id}/report")
def job_report(job_id: str, state: StateDep, user: UserDep) -> JSONResponse:
    """The ImportReport of a finished async import (200 whatever its status)."""
    report = state.jobs.report(job_id)
    if report is None:
        raise ApiError(404, f"Summary for job {job_id} does not exist", error_code="E1005")
    return JSONResponse(report)


def _split(value: str | None) -> list[str]:
    if not value:
        return []
    return [part for part in value.replace(";", ",").split(",") if part]


def _matches(doc: dict[str, Any], query: Any, kind: str) -> bool:
    checks = {
        "orgUnit": _split(query.get("orgUnit")) + _split(query.get("orgUnits")),
        "program": _split(query.get("program")),
        "programStage": _split(query.get("programStage")),
        "trackedEntity": _split(query.get("trackedEntity")) if kind != "trackedEntities" else [],
        "enrollment": _split(query.get("enrollments")) if kind == "events" else [],
        "trackedEntityType": _split(query.get("trackedEntityType")),
    }
    return all(not wanted or doc.get(name) in wanted for name, wanted in checks.items())


@router.get("/api/tracker/{kind}")
def export_list(kind: str, request: Request, state: StateDep, user: UserDep) -> JSONResponse:
    """Paged exports of tracked entities, enrollments or events."""
    if kind not in _EXPORTS:
        raise ApiError(404, f"Resource not found: tracker/{kind}")
    table = _EXPORTS[kind][0]
    query = request.query_params
    page = max(1, int(query.get("page", "1")))
    page_size = max(1, int(query.get("pageSize", "50")))
    wanted = _split(query.get(kind))
    if wanted:
        docs = [found.doc for uid in wanted if (found := state.store.get(table, uid)) and not found.deleted]
    else:
        docs, _ = state.store.list_objects(table, limit=1_000_000)
    if kind == "trackedEntities" and query.get("program"):
        enrolled = {
            doc["trackedEntity"]
            for doc in state.store.list_objects(
                "enrollment", where={"program": query["program"]}, limit=10**6
            )[0]
        }
        docs = [doc for doc in docs if doc["trackedEntity"] in enrolled]
        query_checks = {k: v for k, v in query.items() if k != "program"}
    else:
        query_checks = dict(query.items())
    for text in query.getlist("filter"):
        attribute, _, rest = text.partition(":")
        _, _, value = rest.partition(":")
        holders = set(state.store.tracked_entities_with_value(attribute, value))
        docs = [doc for doc in docs if doc.get("trackedEntity") in holders]
    docs = [doc for doc in docs if _matches(doc, query_checks, kind)]
    paging = query.get("paging", "true").lower() != "false"
    if paging:
        docs = docs[(page - 1) * page_size : page * page_size]
    body: dict[str, Any] = {}
    if state.version >= (2, 41):
        body["pager"] = {"page": page, "pageSize": page_size}
        if state.version == (2, 41):
            body.update({"page": page, "pageSize": page_size})
        body[kind] = docs
    else:
        body.update({"page": page, "pageSize": page_size, "instances": docs})
    return JSONResponse(body)


@router.get("/api/tracker/{kind}/{uid}")
def export_one(kind: str, uid: str, state: StateDep, user: UserDep) -> JSONResponse:
    """One tracked entity, enrollment or event."""
    if kind not in _EXPORTS:
        raise ApiError(404, f"Resource not found: tracker/{kind}/{uid}")
    table, label, _ = _EXPORTS[kind]
    found = state.store.get(table, uid)
    if found is None or found.deleted:
        raise ApiError(404, f"{label} with id {uid} could not be found.", error_code="E1005")
    return JSONResponse(found.doc)
