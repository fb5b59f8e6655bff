"""Build the gateway app for black-box tests: a fresh SQLite store and a real API client token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from gateway.api.app import create_app
from gateway.auth.tokens import hash_token, new_token
from gateway.settings import Settings
from gateway.store import ApiClient, open_store

ALL_SCOPES = ("system/*.cruds",)
# Black-box suites send requests at machine speed. The rate limits stay on (every request
# still passes the limiter) but are set where these clients never reach them.
MACHINE_SPEED_LIMITS = {"requests_per_second": 1_000_000, "burst": 1_000_000}


@dataclass(frozen=True, slots=True)
class GatewayUnderTest:
    """An app, the bearer token of a client allowed everything, and its settings."""

    app: FastAPI
    token: str
    settings: Settings

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for requests."""
        return {"Authorization": f"Bearer {self.token}"}


def register_client(store_url: str, name: str, scopes: tuple[str, ...] = ALL_SCOPES) -> str:
    """Register an API client the way ``gateway clients create`` does; return its token."""
    token = new_token()
    store = open_store(store_url)
    try:
        store.save_client(ApiClient(name=name, scopes=scopes, created=datetime.now(UTC)), hash_token(token))
    finally:
        store.close()
    return token


def build_gateway(directory: Path, **overrides: Any) -> GatewayUnderTest:
    """A gateway app over SQLite files in ``directory``; ``overrides`` are Settings fields."""
    directory.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "store_url": f"sqlite:///{directory / 'gateway.db'}",
        "queue_url": f"sqlite:///{directory / 'queue.db'}",
        "rate_limit": MACHINE_SPEED_LIMITS,
        **overrides,
    }
    settings = Settings(**values)
    token = register_client(settings.store_url, "conformance-tests")
    return GatewayUnderTest(create_app(settings), token, settings)
