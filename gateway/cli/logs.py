"""Process logging of ``gateway serve`` and ``gateway worker``: one line per event, each with a time.

``log_format: text`` (the default) writes ``2026-12-05T01:02:03.456Z INFO gateway.delivery: …``;
``log_format: json`` writes one JSON object a line (``time``, ``level``, ``logger``, ``message``,
and ``error`` with the exception type when there is one) for log collectors. Either way the
access log (``gateway.access``, one JSON line per request) goes to the same stream bare, so a
collector reads every line of the JSON format as JSON. Python warnings are logged on
``py.warnings`` naming the module, never the source file's absolute path. httpx and httpcore
log every outgoing request at INFO; they are held at WARNING (the connectors log what matters).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
import warnings
from typing import TYPE_CHECKING, Any, TextIO

from gateway import jsonio
from gateway.errors import module_of

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]

QUIET = ("httpx", "httpcore")


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``<UTC time> LEVEL logger: message`` (an exception adds its stack below, without its message)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (plus a stack if any)."""
        line = f"{_utc(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += "\n" + _stack_without_messages(record.exc_info[1])
        return line


def _stack_without_messages(exc: BaseException) -> str:
    """Where ``exc`` (and what caused it) was raised, each named by its type only: an exception's
    message can quote a record (a value that failed to parse, a key, a driver's echo of a row), and
    other libraries (uvicorn's "Exception in ASGI application") log with the exception attached."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        stack = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{stack}{type(current).__name__} (message left out)")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhile handling or caused by:\n".join(reversed(parts))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` and the exception type."""

    def format(self, record: logging.LogRecord) -> str:
        """One line; a traceback is kept out (it may quote data), its exception type is kept."""

        entry: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return jsonio.dumps(entry).decode()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    logging.getLogger("py.warnings").warning("%s: %s (%s:%d)", category.__name__, message, module_of(filename), lineno)


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Set up the root logger, the access log and warnings for a long-running process."""
    from gateway.api import configure_access_log

    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's own handlers write without a time; its records go through the root's instead.
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log names the path as sent and its query string (resource ids, search values
    # such as ?name=…): the gateway writes its own access line instead (gateway.access). `gateway
    # serve` tells uvicorn access_log=False, but under --workers each worker process configures
    # logging after uvicorn did, so silence it here, where every process passes.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False
    if settings.access_log:
        configure_access_log(out)
    warnings.showwarning = _show_warning
