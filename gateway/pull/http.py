"""GET a source's API with back-off: 429, 5xx and network errors wait and try again (honouring
Retry-After) as the delivery engine's ``RetryPolicy`` says; 401/403 end the pull at once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from gateway import jsonio
from gateway.delivery import RetryPolicy
from gateway.pull.base import PullAuthError, PullError

__all__ = ["Fetcher"]

log = logging.getLogger("gateway.pull")

Sleep = Callable[[float], Awaitable[None]]


class Fetcher:
    """JSON GETs of one source, retried per ``policy``."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        source: str,
        policy: RetryPolicy,
        *,
        sleep: Sleep = anyio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.source = source
        self.policy = policy
        self._sleep = sleep
        self._rand = rand
        self.retries = 0  # waits so far, for the pull's summary

    async def get(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer to ``GET url``; raises ``PullError``/``PullAuthError``."""
        first = time.monotonic()
        attempts = 0
        # Named in logs and errors: the host and port only, never a userinfo's password.
        host = urlsplit(url).netloc.rpartition("@")[2]
        while True:
            hint: float | None = None
            try:
                response = await self.client.get(url, params=params)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__} reaching {host}"
            else:
                if response.status_code in (401, 403):
                    raise PullAuthError(
                        f"source {self.source}: {host} answered {response.status_code}: the credentials"
                        " were refused; check pull.auth (its secret_env/secret_file and the account's rights)"
                    )
                if response.status_code < 300:
                    try:
                        return jsonio.loads(response.content)
                    except orjson.JSONDecodeError as exc:
                        raise PullError(f"source {self.source}: {host} answered with something not JSON") from exc
                if response.status_code != 429 and response.status_code < 500:
                    raise PullError(
                        f"source {self.source}: {host} answered {response.status_code} to {urlsplit(url).path}"
                        " (check pull: base_url and the project/form/domain/asset ids)"
                    )
                reason = f"{host} answered {response.status_code}"
                hint = _retry_after(response.headers.get("retry-after"))
            attempts += 1
            now = time.monotonic()
            due = self.policy.next_attempt_at(
                attempts=attempts, first_enqueued_at=first, now=now, hint=hint, rand=self._rand()
            )
            if due is None:
                raise PullError(f"source {self.source}: gave up after {attempts} attempts: {reason}")
            log.warning("pull source=%s: %s; trying again in %.1fs", self.source, reason, due - now)
            self.retries += 1
            await self._sleep(due - now)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
