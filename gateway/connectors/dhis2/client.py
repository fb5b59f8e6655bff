"""The DHIS2 HTTP client: one pooled ``httpx.AsyncClient`` per destination, explicit timeouts.

    client = Dhis2Client("https://dhis2.example.org", auth=credentials.httpx_auth())
    info = await client.system_info()
    response = await client.post_tracker(payload, {"async": "false", "atomicMode": "OBJECT"})

Import calls return the raw ``httpx.Response``: a 409 from ``/api/tracker`` or
``/api/dataValueSets`` carries a report the caller must read, not an error. Reads raise
``Dhis2HttpError`` / ``Dhis2TransportError``. Logs carry method, path, status and timing
only — never bodies, query values or the ``Authorization`` header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from gateway import jsonio
from gateway.connectors.dhis2.config import default_timeout, parse_version, ping_path
from gateway.connectors.dhis2.errors import Dhis2HttpError, Dhis2ProtocolError, Dhis2TransportError

__all__ = ["Dhis2Client", "SystemInfo"]

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]


class SystemInfo:
    """The parts of ``/api/system/info`` the connector uses."""

    def __init__(self, raw: JsonObject) -> None:
        self.raw = raw
        self.version_text = str(raw.get("version", ""))
        self.version = parse_version(self.version_text)


class Dhis2Client:
    """Async client for the DHIS2 Web API endpoints the connector needs."""

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        auth: httpx.Auth | None = None,
        timeout: httpx.Timeout | None = None,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # ``http`` is a ready client (the delivery engine's, with credentials and pool
        # applied); otherwise one is built here. Either way this object owns and closes it.
        self.base_url = base_url.rstrip("/")
        self.version: tuple[int, int] | None = None  # known once system_info() answered
        self._http = http or httpx.AsyncClient(
            auth=auth,
            timeout=timeout or default_timeout(),
            limits=limits or httpx.Limits(max_connections=16, max_keepalive_connections=8),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        """Send one request; transport failures become ``Dhis2TransportError``."""
        content = None if body is None else jsonio.dumps(body)
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            response = await self._http.request(
                method, self.base_url + path, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            logger.info("dhis2 %s %s failed: %s", method, path, type(exc).__name__)
            raise Dhis2TransportError(f"{method} {path}: {type(exc).__name__}") from exc
        logger.debug(
            "dhis2 %s %s -> %d in %.0f ms",
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON document; non-2xx answers raise ``Dhis2HttpError``."""
        response = await self.request("GET", path, params=params)
        if not response.is_success:
            raise http_error(path, response)
        try:
            return jsonio.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise Dhis2ProtocolError(f"GET {path}: the answer is not JSON") from exc

    async def system_info(self) -> SystemInfo:
        """``/api/system/info`` (the version decides report shapes)."""
        raw = await self.get_json("/api/system/info")
        if not isinstance(raw, dict) or "version" not in raw:
            raise Dhis2ProtocolError("/api/system/info has no version")
        try:
            info = SystemInfo(raw)
        except ValueError as exc:
            raise Dhis2ProtocolError(f"/api/system/info: {exc}") from exc
        self.version = info.version
        return info

    async def ping(self) -> str:
        """Check DHIS2 is up (the endpoint needs no credentials); the path pinged, which depends on the version.

        Before ``system_info()`` the version is unknown: ``/api/ping`` (2.42+) is tried, then
        ``/api/system/ping`` when that path does not exist.
        """
        paths = [ping_path(self.version)] if self.version else ["/api/ping", "/api/system/ping"]
        for path in paths:
            response = await self.request("GET", path)
            if response.is_success:
                return path
            if response.status_code != 404:
                raise http_error(path, response)
        raise http_error(paths[-1], response)

    async def pages(
        self, collection: str, *, fields: str, filters: tuple[str, ...] = (), page_size: int = 200
    ) -> AsyncIterator[tuple[list[JsonObject], int, int]]:
        """Yield ``(objects, page, page_count)`` for every page of a metadata list."""
        page = 1
        while True:
            query = httpx.QueryParams(
                {"fields": fields, "page": page, "pageSize": page_size, "filter": list(filters)}
            )
            body = await self.get_json(f"/api/{collection}", params=query)
            if not isinstance(body, dict) or not isinstance(body.get(collection), list):
                raise Dhis2ProtocolError(f"/api/{collection}: no {collection} list in the answer")
            pager = body.get("pager") or {}
            page_count = int(pager.get("pageCount", 1))
            yield body[collection], page, page_count
            if page >= page_count or not body[collection]:
                return
            page += 1

    async def post_tracker(self, payload: JsonObject, params: Mapping[str, str]) -> httpx.Response:
        """``POST /api/tracker``; the caller reads the report (200 or 409) or job reference."""
        return await self.request("POST", "/api/tracker", params=params, body=payload)

    async def tracker_job(self, job_id: str) -> httpx.Response:
        """``GET /api/tracker/jobs/{id}`` (notifications, newest first)."""
        return await self.request("GET", f"/api/tracker/jobs/{job_id}")

    async def tracker_job_report(self, job_id: str) -> httpx.Response:
        """``GET /api/tracker/jobs/{id}/report``."""
        return await self.request(
            "GET", f"/api/tracker/jobs/{job_id}/report", params={"reportMode": "ERRORS"}
        )

    async def post_data_values(self, payload: JsonObject, params: Mapping[str, str]) -> httpx.Response:
        """``POST /api/dataValueSets``; the caller reads the ImportSummary (200 or 409)."""
        return await self.request("POST", "/api/dataValueSets", params=params, body=payload)

    async def uncomplete(self, data_set: str, period: str, org_unit: str) -> httpx.Response:
        """``DELETE /api/completeDataSetRegistrations``: the data set no longer registered complete
        for (period, org unit) and the default attribute option combo (204; 409 names a bad id)."""
        params = {"ds": data_set, "pe": period, "ou": org_unit}
        return await self.request("DELETE", "/api/completeDataSetRegistrations", params=params)


def http_error(endpoint: str, response: httpx.Response) -> Dhis2HttpError:
    """A ``Dhis2HttpError`` with the WebMessage's message and error code, if there is one."""
    message: str | None = None
    error_code: str | None = None
    try:
        body = jsonio.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") if isinstance(body.get("message"), str) else None
        error_code = body.get("errorCode") if isinstance(body.get("errorCode"), str) else None
    return Dhis2HttpError(endpoint, response.status_code, message, error_code)
