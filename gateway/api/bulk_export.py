"""FHIR Bulk Data Access 2.0 ``$export``: kick-off, status, cancel and file download.

Kick-off (``GET /fhir/$export``, ``/fhir/Patient/$export``, ``/fhir/Group/{id}/$export``,
``Prefer: respond-async``; or ``POST`` to the same with a FHIR ``Parameters`` body, whose
``patient`` parameters limit a Patient- or Group-level export to those Patients) answers
202 with ``Content-Location`` naming the status URL; the job runs in this process
(``gateway.export.BulkExporter``). Only the client that kicked a job off may poll it,
cancel it (``DELETE``) or download its files, and a download is checked again: the client must
still have the search scope of the file's type and the data policy the job ran under (files
written under a wider grant are not handed to a narrowed one). A named type that cannot be exported at the
requested level gets an OperationOutcome in the manifest's ``error`` files.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from gateway import jsonio
from gateway.auth import Principal
from gateway.errors import FhirError, not_found
from gateway.export import BulkExporter, export_dir, manifest, parameters_items, parse_kickoff
from gateway.fhir import ID_RE, parse_json
from gateway.store import ExportJob

from .access_log import TemplateRoute
from .auth import authenticate, require_fhir, search_access
from .context import base_url, ctx_of
from .negotiation import check_content_type, fhir_response, prefer, read_body

NDJSON = "application/fhir+ndjson"
_RETRY_SECONDS = "2"


async def kickoff_system(request: Request) -> Response:
    """``GET /fhir/$export``: every type the client may search."""
    return await _kickoff(request, "system", None)


async def kickoff_patient(request: Request) -> Response:
    """``GET /fhir/Patient/$export``: the compartments of every Patient the client may see."""
    require_fhir(request, "Patient", "s")
    return await _kickoff(request, "patient", None)


async def kickoff_group(request: Request) -> Response:
    """``GET /fhir/Group/{id}/$export``: the compartments of the Group's member Patients."""
    gid: str = request.path_params["gid"]
    if not ID_RE.match(gid):
        raise not_found(f"Group/{gid[:64]} is not known")
    principal = require_fhir(request, "Group", "r")
    require_fhir(request, "Patient", "s")
    ctx = ctx_of(request)
    access = search_access(request, principal)
    group = await ctx.read(lambda: ctx.store.read("Group", gid, policy=access.policy))
    if group is None or group.deleted:
        raise not_found(f"Group/{gid} is not known")
    return await _kickoff(request, "group", gid)


async def _kickoff(request: Request, level: str, group: str | None) -> Response:
    principal = authenticate(request)
    ctx = ctx_of(request)
    exporter = ctx.services.require_exports()
    if prefer(request).get("respond-async") is None:
        raise FhirError("$export runs asynchronously: send Prefer: respond-async", status=400, code="invalid",
                        expression=["Prefer"])
    accept = (request.headers.get("accept") or "application/fhir+json").split(";")[0].strip()
    if accept not in ("application/fhir+json", "application/json", "*/*"):
        raise FhirError("$export answers in application/fhir+json (the Accept header asks otherwise)",
                        status=400, code="not-supported", expression=["Accept"])
    items = list(request.query_params.multi_items())
    if request.method == "POST":
        check_content_type(request)
        body = await read_body(request, ctx.settings.max_body_bytes)
        items += parameters_items(parse_json(body, max_depth=ctx.settings.max_json_depth))
    export = parse_kickoff(items, level=level, group=group,
                           access=search_access(request, principal), parser=ctx.parser, profiles=exporter.profiles,
                           deidentify_ready=exporter.deidentify_ready)
    if principal.deidentified:
        export.params["policy_deidentify"] = True
    if principal.limits_rows:
        export.params["policy_limits_rows"] = True  # files leave out the identity matcher's links
    export.params["policy_digest"] = _policy_digest(principal)
    # Echoed in the manifest: built from the base URL, like every link, never from a stray Host.
    base = base_url(request)
    query = f"?{request.url.query}" if request.url.query else ""
    kicked = f"{base}{request.url.path.removeprefix('/fhir')}{query}"
    job = await exporter.submit(principal.name, kicked, export)
    status_url = f"{base}/$export-status/{job.job_id}"
    return Response(status_code=202, headers={"Content-Location": status_url})


def _policy_digest(principal: Principal) -> str:
    """A fingerprint of the principal's data policy (what an export's files were filtered by)."""
    policy = None if principal.policy is None else principal.policy.to_json()
    return hashlib.sha256(jsonio.dumps(policy, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


async def _own_job(request: Request, exporter: BulkExporter) -> ExportJob:
    return (await _owned(request, exporter))[1]


async def _owned(request: Request, exporter: BulkExporter) -> tuple[Principal, ExportJob]:
    principal = authenticate(request)
    job_id: str = request.path_params["job"]
    job = await asyncio.to_thread(exporter.store.export_get, job_id) if job_id.isalnum() else None
    if job is None or job.client != principal.name:  # another client's job is as good as unknown
        raise not_found("no such export")
    return principal, job


async def status(request: Request) -> Response:
    """``GET $export-status/{job}``: 202 while running, the manifest when done, an error when failed."""
    exporter = ctx_of(request).services.require_exports()
    job = exporter.check_alive(await _own_job(request, exporter))
    if job.status in ("accepted", "running"):
        return Response(status_code=202, headers={"X-Progress": job.progress or job.status,
                                                  "Retry-After": _RETRY_SECONDS})
    if job.status == "failed":
        raise FhirError(f"the export failed: {job.progress}", status=500, code="exception")
    headers = {"Expires": job.expires.strftime("%a, %d %b %Y %H:%M:%S GMT")} if job.expires else None
    return JSONResponse(manifest(job, base_url(request)), headers=headers)


async def cancel(request: Request) -> Response:
    """``DELETE $export-status/{job}``: stop the job and delete its files (202)."""
    exporter = ctx_of(request).services.require_exports()
    job = await _own_job(request, exporter)
    await asyncio.to_thread(exporter.cancel, job.job_id)
    return fhir_response({"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational", "diagnostics": "the export was cancelled"}]},
        status=202)


async def download(request: Request) -> Response:
    """``GET $export-file/{job}/{file}``: one NDJSON file of a finished job."""
    exporter = ctx_of(request).services.require_exports()
    principal, job = await _owned(request, exporter)
    name: str = request.path_params["file"]
    listed = {item["file"]: item for item in job.output}
    errors = {item["file"] for item in job.error}
    if job.status != "done" or (name not in listed and name not in errors):
        raise not_found("no such export file")
    if name in listed:
        # The grant is checked at download too: a narrowed client (or a narrower SMART token of it)
        # does not get what a wider one had exported.
        require_fhir(request, str(listed[name].get("type")), "s")
        current = _policy_digest(principal)
        if job.params.get("policy_digest", current) != current:
            raise FhirError("this client's data policy changed since the export ran: kick off a new export",
                            status=403, code="forbidden")
    path: Path = export_dir(exporter.settings, job.job_id) / name
    if not path.is_file():
        raise FhirError("the export's files have been removed", status=410, code="deleted")
    return FileResponse(path, media_type=NDJSON, filename=quote(name))


ROUTES = [
    TemplateRoute("/fhir/$export", kickoff_system, methods=["GET", "POST"]),
    TemplateRoute("/fhir/Patient/$export", kickoff_patient, methods=["GET", "POST"]),
    TemplateRoute("/fhir/Group/{gid}/$export", kickoff_group, methods=["GET", "POST"]),
    TemplateRoute("/fhir/$export-status/{job}", status, methods=["GET"]),
    TemplateRoute("/fhir/$export-status/{job}", cancel, methods=["DELETE"]),
    TemplateRoute("/fhir/$export-file/{job}/{file}", download, methods=["GET"]),
]
