"""The mapping playground: paste a record, pick a source, see the Bundle, its problems and the DHIS2 payload.

Nothing is stored or sent. The record is mapped with the source's running mapping set (as
ingest maps it), checked as ``gateway mappings run`` checks it (a mapping error names the
mapping file and the rule's line), and planned for every DHIS2 destination this process
delivers to, reading what it references from the record's own resources, then the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.context import AppContext, ctx_of
from gateway.errors import MappingError
from gateway.mapping import InputError, MappingSet, YamlSyntaxError, fhir_problems, parse_csv, read_yaml

from .web import ConsoleError, checked_form, console_of, login, page

MAX_RECORD_BYTES = 256 * 1024


def _sources(ctx: AppContext) -> list[str]:
    return list(ctx.ingest.registry.sources) if ctx.services.ingest is not None else []


async def playground(request: Request) -> Response:
    """The form."""
    await login(request)
    return page(request, "playground.html", sources=_sources(ctx_of(request)), source="", record="")


def rule_location(mapping_set: MappingSet, error: MappingError) -> str | None:
    """``file:line`` of the rule (else the mapping) a mapping error happened in, when it is known."""
    mapping = next((m for m in mapping_set.mappings if m.name == error.mapping), None)
    if mapping is None:
        return None
    line = 1
    try:
        doc = read_yaml(Path(mapping.file))
        rules = doc.data.get("rules", []) if isinstance(doc.data, dict) else []
        index = next((i for i, rule in enumerate(rules) if isinstance(rule, dict) and rule.get("name") == error.rule),
                     None)
        if index is not None:
            line = doc.line_of(("rules", index))
    except (OSError, YamlSyntaxError):
        pass
    return f"{mapping.file}:{line}"


def _records(text: str) -> list[Any]:
    stripped = text.strip()
    if not stripped:
        raise ConsoleError(400, "Paste a record first.")
    if stripped[0] in "{[":
        try:
            value = jsonio.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ConsoleError(400, f"The record is not valid JSON: {exc}") from None
        records = value if isinstance(value, list) else [value]
    else:
        try:
            records = parse_csv(stripped.encode())
        except InputError as exc:
            raise ConsoleError(400, f"The record is neither JSON nor CSV: {exc}") from None
    if not records or len(records) > 20:
        raise ConsoleError(400, "Paste one record (or up to 20, as a JSON array or CSV rows).")
    return records


async def run(request: Request) -> Response:
    """Map the pasted record(s) and show what would be stored and sent."""
    await login(request)
    form = await checked_form(request, console_of(request))
    try:
        return await _mapped(request, form)
    except ConsoleError as exc:
        # htmx swaps no 4xx answer into the page (its default responseHandling): a refusal of the
        # form's input would show nothing, so the browser's request gets it as the result instead.
        if exc.status != 400 or not request.headers.get("hx-request"):
            raise
        return page(request, "playground_result.html", refused=exc.message)


async def _mapped(request: Request, form: Mapping[str, Any]) -> Response:
    ctx = ctx_of(request)
    source_name = str(form.get("source") or "")
    text = str(form.get("record") or "")
    if len(text.encode()) > MAX_RECORD_BYTES:
        raise ConsoleError(400, f"The record is larger than {MAX_RECORD_BYTES // 1024} KiB.")
    registry = ctx.ingest.registry
    if source_name not in registry.sources:
        raise ConsoleError(400, "Pick one of the configured sources.")
    mapping_set = registry.mapping_set(registry.source(source_name))
    results: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    for record in _records(text):
        try:
            bundle = mapping_set.map_record(record)
        except MappingError as exc:
            results.append({"error": str(exc), "code": exc.code, "where": rule_location(mapping_set, exc),
                            "bundle": None, "problems": []})
            continue
        results.append({"bundle": jsonio.dumps(bundle, option=orjson.OPT_INDENT_2).decode(), "error": None,
                        "problems": await ctx.query(fhir_problems, bundle)})
        resources += [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]
    previews = []
    delivery = ctx.services.delivery
    dhis2 = [(name, connector) for name, connector in (delivery.connectors.items() if delivery is not None else [])
             if delivery is not None and delivery.admin.destinations[name].kind == "dhis2"]
    if dhis2 and resources:
        from gateway.connectors.dhis2 import Dhis2Connector, preview_payload  # only DHIS2 deployments pay its import
    for name, connector in dhis2 if resources else []:
        if isinstance(connector, Dhis2Connector):
            preview = await preview_payload(connector, resources)
            previews.append({
                "name": name, "unavailable": preview.unavailable, "notes": preview.notes,
                "tracker": jsonio.dumps(preview.tracker, option=orjson.OPT_INDENT_2).decode()
                if preview.tracker else None,
                "aggregate": [jsonio.dumps(s, option=orjson.OPT_INDENT_2).decode() for s in preview.data_value_sets],
            })
    template = "playground_result.html" if request.headers.get("hx-request") else "playground.html"
    return page(request, template, sources=_sources(ctx), source=source_name, record=text, results=results,
                previews=previews, delivering=delivery is not None and bool(delivery.connectors))
