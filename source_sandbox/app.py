"""The four stand-ins behind one FastAPI app, with each API's own way of logging in and failures on demand.

The CHT and CommCare stand-ins also take writes (CouchDB `PUT /{db}/{docid}`, CommCare's form
receiver), the way the referral return path writes outcomes back.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from source_sandbox.cht import CouchDb
from source_sandbox.clock import ServerClock
from source_sandbox.commcare import CommCare
from source_sandbox.kobo import Kobo
from source_sandbox.odk_central import ODataError, OdkCentral


@dataclass(frozen=True, slots=True)
class Fault:
    """An answer to give instead of the real one: ``status``, with ``Retry-After`` if set."""

    status: int
    retry_after: str | None = None
    after: bool = False  # the request is processed first, then the answer is lost (this status instead)
    delay: float = 0.0  # seconds the lost answer takes to come: a caller may give up (or die) waiting


class SourceSandbox:
    """ODK Central, CommCare HQ, a CHT CouchDB and KoboToolbox in one process.

    Logins: ODK Central and CouchDB take HTTP Basic ``username``/``password``; CommCare
    ``Authorization: ApiKey <username>:<api_key>``; Kobo ``Authorization: Token <token>``.
    """

    def __init__(
        self,
        *,
        username: str = "gateway@example.org",
        password: str = "pull-secret",
        api_key: str = "cc-api-key",
        token: str = "kobo-token",
    ) -> None:
        self.clock = ServerClock()
        self.odk = OdkCentral(self.clock)
        self.commcare = CommCare(self.clock)
        self.cht = CouchDb()
        self.kobo = Kobo(self.clock)
        self.username, self.password, self.api_key, self.token = username, password, api_key, token
        self.forbidden: set[str] = set()  # APIs whose account lacks the rights (403)
        self.faults: dict[str, deque[Fault]] = {api: deque() for api in ("odk", "commcare", "cht", "kobo")}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (api, path, query) of every request
        self.methods: list[str] = []  # the method of each of ``requests``

    def fail_next(self, api: str, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests to ``api`` with ``status`` (e.g. 429, 503)."""
        self.faults[api].extend(Fault(status, retry_after) for _ in range(times))

    def lose_next_answer(self, api: str, status: int = 504, delay: float = 0.0) -> None:
        """Process the next request to ``api`` but answer ``status`` (after ``delay`` s), as a reply lost on the way."""
        self.faults[api].append(Fault(status, after=True, delay=delay))

    def _check(self, api: str, request: Request) -> Response | None:
        self.requests.append((api, request.url.path, dict(request.query_params)))
        self.methods.append(request.method)
        if self.faults[api] and not self.faults[api][0].after:
            fault = self.faults[api].popleft()
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return JSONResponse({"message": "fault"}, status_code=fault.status, headers=headers)
        header = request.headers.get("authorization", "")
        if api in ("odk", "cht"):
            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        elif api == "commcare":
            expected = f"ApiKey {self.username}:{self.api_key}"
        else:
            expected = f"Token {self.token}"
        if header != expected:
            body: dict[str, Any] = (
                {"code": 401.2, "message": "Could not authenticate with the provided credentials."}
                if api == "odk" else {"error": "unauthorized", "reason": "Name or password is incorrect."}
                if api == "cht" else {"detail": "Invalid token."}
            )  # fmt: skip
            return JSONResponse(body, status_code=401)
        if api in self.forbidden:
            return JSONResponse({"message": "The authenticated actor does not have rights to perform that action."},
                                status_code=403)  # fmt: skip
        return None

    async def _lost(self, api: str) -> Response | None:
        """The answer that replaces a processed request's own, if one was asked for."""
        if self.faults[api] and self.faults[api][0].after:
            fault = self.faults[api].popleft()
            await asyncio.sleep(fault.delay)
            return JSONResponse({"message": "gateway timeout"}, status_code=fault.status)
        return None

    def app(self) -> FastAPI:
        """The HTTP API."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        def base(request: Request) -> str:
            return str(request.base_url).rstrip("/")

        @app.get("/v1/projects/{project}/forms/{form}.svc/Submissions")
        async def odk_submissions(project: int, form: str, request: Request) -> Response:
            refused = self._check("odk", request)
            if refused is not None:
                return refused
            try:
                answer = self.odk.submissions(base(request), project, form, dict(request.query_params))
            except KeyError:
                return JSONResponse({"code": 404.1, "message": "Could not find the resource you were looking for."},
                                    status_code=404)  # fmt: skip
            except ODataError as exc:
                return JSONResponse({"code": 501.4, "message": str(exc)}, status_code=501)
            return JSONResponse(answer)

        @app.get("/a/{domain}/api/form/v1/")
        async def commcare_forms(domain: str, request: Request) -> Response:
            refused = self._check("commcare", request)
            return refused or JSONResponse(self.commcare.form_list(domain, dict(request.query_params)))

        @app.get("/a/{domain}/api/case/v2/")
        async def commcare_cases(domain: str, request: Request) -> Response:
            refused = self._check("commcare", request)
            return refused or JSONResponse(self.commcare.case_list(base(request), domain, dict(request.query_params)))

        @app.get("/{db}/_changes")
        async def couch_changes(db: str, request: Request) -> Response:
            refused = self._check("cht", request)
            return refused or JSONResponse(self.cht.changes(dict(request.query_params)))

        @app.get("/{db}/{doc_id}")
        async def couch_get(db: str, doc_id: str, request: Request) -> Response:
            refused = self._check("cht", request)
            if refused is not None:
                return refused
            status, answer = self.cht.read(doc_id)
            return JSONResponse(answer, status_code=status)

        @app.delete("/{db}/{doc_id}")
        async def couch_delete(db: str, doc_id: str, request: Request) -> Response:
            refused = self._check("cht", request)
            if refused is not None:
                return refused
            status, answer = self.cht.remove(doc_id, request.query_params.get("rev"))
            return JSONResponse(answer, status_code=status)

        @app.put("/{db}/{doc_id}")
        async def couch_put(db: str, doc_id: str, request: Request) -> Response:
            refused = self._check("cht", request)
            if refused is not None:
                return refused
            try:
                doc = json.loads(await request.body())
            except ValueError:
                return JSONResponse({"error": "bad_request", "reason": "invalid UTF-8 JSON"}, status_code=400)
            if not isinstance(doc, dict):
                return JSONResponse({"error": "bad_request", "reason": "Document must be a JSON object"},
                                    status_code=400)  # fmt: skip
            status, answer = self.cht.write(doc_id, doc)
            return await self._lost("cht") or JSONResponse(answer, status_code=status)

        @app.post("/a/{domain}/receiver/api/")
        @app.post("/a/{domain}/receiver/{app_id}/")
        async def commcare_receiver(domain: str, request: Request) -> Response:
            refused = self._check("commcare", request)
            if refused is not None:
                return refused
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                upload = (await request.form()).get("xml_submission_file")
                body = await upload.read() if upload is not None and not isinstance(upload, str) else b""
            else:
                body = await request.body()
            open_rosa_3 = request.headers.get("x-openrosa-version") == "3.0"
            status, answer = self.commcare.receiver.submit(domain, body, open_rosa_3=open_rosa_3)
            return await self._lost("commcare") or Response(answer, status_code=status, media_type="text/xml")

        @app.get("/api/v2/assets/{asset}/data/")
        async def kobo_data(asset: str, request: Request) -> Response:
            refused = self._check("kobo", request)
            return refused or JSONResponse(self.kobo.data(base(request), asset, dict(request.query_params)))

        return app
