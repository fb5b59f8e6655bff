"""Aggregate endpoints: ``POST/GET /api/dataValueSets`` and the async import task list."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dhis2_sandbox.aggregate import AggregateParams, AggregateResult, run_data_value_import
from dhis2_sandbox.context import ApiError, SandboxState, StateDep, UserDep, WriterDep
from dhis2_sandbox.periods import InvalidPeriod, read_period
from dhis2_sandbox.tracker_payload import generate_uid
from dhis2_sandbox.webmessages import web_message, web_message_body

__all__ = ["router"]

router = APIRouter()


_OUTCOME = {
    "SUCCESS": (200, "OK", "Import was successful."),
    # The typo is DHIS2's own (WebMessageUtils.importSummary).
    "WARNING": (409, "WARNING", "One more conflicts encountered, please check import summary."),
    "ERROR": (409, "ERROR", "An error occurred, please check import summary."),
}


def _locked(state: SandboxState, run: partial[AggregateResult]) -> AggregateResult:
    with state.import_lock:
        return run()


@router.post("/api/dataValueSets")
async def import_data_values(request: Request, state: StateDep, user: WriterDep) -> JSONResponse:
    """Import a JSON data value set."""
    try:
        params = AggregateParams.from_query(request.query_params)
    except ValueError as exc:
        raise ApiError(409, str(exc)) from exc
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise ApiError(415, f"The DHIS2 sandbox accepts only JSON data value sets, not {content_type}")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"JSON parse error: {exc.msg}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON data value set")
    run = partial(
        run_data_value_import,
        body,
        params,
        state.catalog,
        state.store,
        username=user.username,
        capture_roots=state.capture_roots(user),
        version=state.version,
        today=date.today(),
    )
    if params.run_async:
        task_id = generate_uid()
        tasks = state.aggregate_tasks
        tasks[task_id] = None  # async import id → summary (None while running)

        async def background() -> None:
            result = await anyio.to_thread.run_sync(_locked, state, run)
            tasks[task_id] = result.summary

        task = asyncio.get_running_loop().create_task(background())
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        response = {
            "name": "dataValueImport",
            "id": task_id,
            "created": created,
            "jobType": "DATAVALUE_IMPORT",
            "relativeNotifierEndpoint": f"/api/system/tasks/DATAVALUE_IMPORT/{task_id}",
        }
        return web_message(200, "Initiated dataValueImport", status="OK", response=response)
    result = await anyio.to_thread.run_sync(_locked, state, run)
    if state.version < (2, 38):
        # Before 2.38 the bare ImportSummary came back with 200 whatever its status.
        return JSONResponse(result.summary)
    code, status, message = _OUTCOME[result.status]
    return JSONResponse(
        web_message_body(code, message, status=status, response=result.summary), status_code=code
    )


@router.get("/api/system/tasks/DATAVALUE_IMPORT/{task_id}")
def task_notifications(task_id: str, state: StateDep, user: UserDep) -> JSONResponse:
    """Progress of an async data value import."""
    if task_id not in state.aggregate_tasks:
        return JSONResponse([])
    done = state.aggregate_tasks[task_id] is not None
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    note = {
        "uid": generate_uid(),
        "level": "INFO",
        "category": "DATAVALUE_IMPORT",
        "time": stamp,
        "message": "Import done" if done else "Importing data values",
        "completed": done,
    }
    return JSONResponse([note])


@router.get("/api/system/taskSummaries/DATAVALUE_IMPORT/{task_id}")
def task_summary(task_id: str, state: StateDep, user: UserDep) -> JSONResponse:
    """The ImportSummary of a finished async data value import."""
    summary = state.aggregate_tasks.get(task_id)
    if summary is None:
        raise ApiError(404, f"Summary for job {task_id} does not exist")
    return JSONResponse(summary)


@router.delete("/api/completeDataSetRegistrations", status_code=204)
def uncomplete(request: Request, state: StateDep, user: WriterDep) -> Response:
    """Un-register a data set's completeness (ds, pe, ou; cc and cp name a non-default attribute
    option combo): 204, also when none was registered; 409 for an unknown data set, period or org unit."""
    query = request.query_params
    data_sets, period_text, org_unit = query.getlist("ds"), query.get("pe"), query.get("ou")
    if not data_sets or not period_text or not org_unit:
        missing = [name for name, value in (("ds", data_sets), ("pe", period_text), ("ou", org_unit)) if not value]
        raise ApiError(400, f"Required request parameter '{missing[0]}' is not present")
    if any(state.catalog.get("dataSets", uid) is None for uid in data_sets):
        raise ApiError(409, f"Illegal data set identifier in this list: [{', '.join(data_sets)}]")
    try:
        period = read_period(period_text)
    except InvalidPeriod as exc:
        raise ApiError(409, f"Illegal period identifier: {period_text}") from exc
    if state.catalog.get("organisationUnits", org_unit) is None:
        raise ApiError(409, f"Illegal organisation unit identifier: {org_unit}")
    if query.get("cc") or query.get("cp"):
        raise ApiError(409, "The DHIS2 sandbox un-completes the default attribute option combo only (no cc/cp)")
    for uid in data_sets:
        state.store.uncomplete(uid, period.iso, org_unit, state.catalog.default_category_option_combo)
    return Response(status_code=204)


@router.get("/api/dataValueSets")
def export_data_values(request: Request, state: StateDep, user: UserDep) -> JSONResponse:
    """Stored values of a data set for a period and org unit."""
    query = request.query_params
    data_set = query.get("dataSet")
    elements: set[str] | None = None
    if data_set:
        found = state.catalog.get("dataSets", data_set)
        if found is None:
            raise ApiError(409, f"Data set not found or not accessible: `{data_set}`")
        elements = {item["dataElement"]["id"] for item in found["dataSetElements"]}
    values = state.store.data_values(
        period=query.get("period"), org_unit=query.get("orgUnit"), data_elements=elements
    )
    body: dict[str, Any] = {"dataValues": values}
    for name in ("dataSet", "period", "orgUnit"):
        if query.get(name):
            body = {name: query[name], **body}
    if data_set and query.get("period") and query.get("orgUnit"):
        completed = state.store.completed(
            data_set, query["period"], query["orgUnit"], state.catalog.default_category_option_combo
        )
        if completed:
            body["completeDate"] = completed
    return JSONResponse(body)
