"""Servers the read benchmark starts in subprocesses: the gateway, and a bare FastAPI ceiling."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response


def bare_app(body: bytes) -> FastAPI:
    """The framework ceiling: one FastAPI route returning fixed bytes."""
    app = FastAPI()

    @app.get("/fhir/Patient/{rid}")
    async def read(rid: str) -> Response:
        return Response(body, media_type="application/fhir+json; charset=utf-8")

    return app


def main() -> None:
    kind, arg, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "bare":
        app = bare_app(Path(arg).read_bytes())
    else:
        from gateway.api.app import create_app
        from gateway.settings import Settings

        app = create_app(Settings(store_url=arg))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
