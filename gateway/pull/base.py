"""What every pull connector yields, and the errors a pull ends with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import ConnectorError

__all__ = ["Page", "PullAuthError", "PullConnector", "PullError"]


class PullError(ConnectorError):
    """A pull cannot go on (the source's API refused or kept failing); the cursor stays where it was."""


class PullAuthError(PullError):
    """The source's API refused the credentials (401/403): retrying will not help."""


@dataclass(slots=True)
class Page:
    """Records read in one request, and the cursor to save once they are all stored."""

    records: list[Any]
    cursor: str


class PullConnector(Protocol):
    """Reads one source's API from a cursor, page by page, in the order the cursor advances."""

    def start(self, since: str | None) -> str | None:
        """The cursor of a pull asked to start at ``since`` (a time, or a CHT sequence)."""
        ...

    def pages(self, cursor: str | None) -> AsyncIterator[Page]:
        """Pages from ``cursor`` on (None: from the beginning), until the source has no more."""
        ...
