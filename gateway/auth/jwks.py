"""A client's public keys for SMART Backend Services: an inline JWK Set, or one fetched from its ``jwks_uri``.

Registration (``check_key_set``) refuses what could never verify an assertion: no public
RS384/ES384-capable key, a private key (the gateway must never hold one), a ``jwks_uri``
that is not https (loopback excepted, for local trials). At token time ``KeySets`` returns
the keys of a client, fetching a ``jwks_uri`` with a timeout and a size cap and caching
it for a few minutes (less if the response's ``Cache-Control`` says so).
"""

from __future__ import annotations

import base64
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson

from gateway import jsonio
from gateway.errors import RequestError

__all__ = ["ALGORITHMS", "KeySetError", "KeySets", "check_key_set", "key_fits"]

#: The signing algorithms SMART asks servers to support (client-confidential-asymmetric).
ALGORITHMS = ("RS384", "ES384")
# JWK members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048
_MAX_KEYS = 20


class KeySetError(RequestError):
    """A key set that cannot be registered, or cannot be fetched when an assertion needs it."""


def _b64_length(value: Any) -> int:
    """Bytes in a base64url JWK member (0 when it is not one)."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return 0


def key_fits(key: Mapping[str, Any], alg: str) -> bool:
    """Whether a public JWK may verify ``alg`` signatures (RS384: RSA; ES384: EC on P-384)."""
    if _PRIVATE_MEMBERS & key.keys():
        return False
    if key.get("alg") not in (None, alg) or key.get("use") not in (None, "sig"):
        return False
    ops = key.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return False
    if alg == "RS384":
        return (key.get("kty") == "RSA" and _b64_length(key.get("n")) * 8 >= _MIN_RSA_BITS
                and _b64_length(key.get("e")) > 0)
    if alg == "ES384":
        return (key.get("kty") == "EC" and key.get("crv") == "P-384" and _b64_length(key.get("x")) == 48
                and _b64_length(key.get("y")) == 48)
    return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_uri(url: str) -> str:
    """A usable ``jwks_uri``: https, or http on a loopback address; raises ``KeySetError``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise KeySetError(f"{url!r} is not an http(s) URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise KeySetError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise KeySetError(f"{url!r}: a key set URL must be https (plain http only on a loopback address)")
    return url


def check_key_set(data: Any) -> dict[str, Any]:
    """A JWK Set (``{"keys": [...]}``) or ``{"jwks_uri": url}`` fit to register; ``KeySetError`` says why not."""
    if not isinstance(data, Mapping):
        raise KeySetError("a key set is a JSON object with a \"keys\" array")
    if "jwks_uri" in data:
        if set(data) != {"jwks_uri"} or not isinstance(data["jwks_uri"], str):
            raise KeySetError("give either a \"keys\" array or a \"jwks_uri\" string, not both")
        return {"jwks_uri": check_jwks_uri(data["jwks_uri"])}
    keys = data.get("keys")
    if not isinstance(keys, list) or not keys:
        raise KeySetError("a key set needs a non-empty \"keys\" array")
    if len(keys) > _MAX_KEYS:
        raise KeySetError(f"a key set holds at most {_MAX_KEYS} keys")
    for number, key in enumerate(keys, 1):
        if not isinstance(key, Mapping):
            raise KeySetError(f"key {number} is not a JSON object")
        if _PRIVATE_MEMBERS & key.keys():
            kid = f" ({key.get('kid')})" if isinstance(key.get("kid"), str) else ""
            raise KeySetError(f"key {number}{kid} is a private or symmetric key: register the public key only")
    usable = [key for key in keys if any(key_fits(key, alg) for alg in ALGORITHMS)]
    if not usable:
        raise KeySetError("no public key can verify RS384 or ES384 signatures (RSA of 2048 bits or more, or EC"
                          " on P-384, with use \"sig\" or none)")
    for key in usable:
        if not isinstance(key.get("kid"), str) or not key["kid"]:
            raise KeySetError("every usable key needs a \"kid\": assertions name their key by it")
        alg = next(alg for alg in ALGORITHMS if key_fits(key, alg))
        try:
            jwt.PyJWK(dict(key), alg)
        except jwt.PyJWTError:
            raise KeySetError(f"key {key['kid']} is not a valid {key.get('kty')} public key") from None
    return {"keys": [dict(key) for key in keys]}


Fetch = Callable[[str], tuple[bytes, float | None]]


class KeySets:
    """The public keys of a client: inline, or fetched from its ``jwks_uri`` and cached.

    A fetched set is kept ``cache_seconds`` (or less, if its response says so). A key id the
    cached set lacks may mean the client rotated its keys, so the caller may ask again with
    ``refresh=True``: that refetches, at most once per ``refetch_seconds`` per URL, so
    assertions naming made-up key ids cannot make the gateway hammer a client's server.
    """

    def __init__(
        self,
        *,
        fetch: Fetch | None = None,
        now: Callable[[], float] = time.monotonic,
        cache_seconds: float = 300.0,
        refetch_seconds: float = 10.0,
        timeout: float = 5.0,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self._fetch = fetch or self._http_fetch
        self._now = now
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._timeout = timeout
        self._max_bytes = max_bytes
        # url -> (fetched at, good until, keys)
        self._cache: dict[str, tuple[float, float, list[dict[str, Any]]]] = {}
        # url -> (failed at, why): not fetched again for refetch_seconds
        self._failed: dict[str, tuple[float, KeySetError]] = {}
        self._fetching: set[str] = set()  # urls being fetched now (by one request)
        self._lock = threading.Lock()

    def keys(self, jwks: Mapping[str, Any], *, refresh: bool = False) -> list[dict[str, Any]]:
        """The keys of a registered key set (``KeySetError`` if a ``jwks_uri`` cannot be fetched or read)."""
        url = jwks.get("jwks_uri")
        if not isinstance(url, str):
            keys = jwks.get("keys")
            return [dict(key) for key in keys if isinstance(key, Mapping)] if isinstance(keys, list) else []
        now = self._now()
        # Anyone may name a client in an assertion, so a fetch is never repeated at a request's
        # bidding: one request at a time fetches a set (others meanwhile use the keys fetched
        # before, or are refused at once rather than each holding a worker thread until the
        # timeout), and a failure stands for refetch_seconds as a fetch does for an unknown kid.
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None:
                fetched, until, keys = cached
                if now < until and not (refresh and now - fetched >= self._refetch_seconds):
                    return keys
            failed = self._failed.get(url)
            if failed is not None and now - failed[0] < self._refetch_seconds:
                raise KeySetError(failed[1].diagnostics)
            if url in self._fetching:
                if cached is not None:
                    return cached[2]
                raise KeySetError("the client's key set is being fetched; try again in a moment")
            self._fetching.add(url)
        try:
            body, max_age = self._fetch(check_jwks_uri(url))
            keys = self._parse(body)
        except KeySetError as exc:
            with self._lock:
                if len(self._failed) > 1000:
                    self._failed.clear()
                self._failed[url] = (now, exc)
            raise
        finally:
            with self._lock:
                self._fetching.discard(url)
        ttl = self._cache_seconds if max_age is None else min(self._cache_seconds, max_age)
        with self._lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[url] = (now, now + ttl, keys)
            self._failed.pop(url, None)
        return keys

    @staticmethod
    def _parse(body: bytes) -> list[dict[str, Any]]:
        try:
            data = jsonio.loads(body)
        except orjson.JSONDecodeError:
            raise KeySetError("the client's key set URL did not return JSON") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list):
            raise KeySetError("the client's key set URL did not return a JWK Set")
        return [key for key in keys if isinstance(key, dict)]

    def _http_fetch(self, url: str) -> tuple[bytes, float | None]:
        """GET ``url``: the body (at most ``max_bytes``) and the response's max-age, if any."""
        try:
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as client, \
                    client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise KeySetError(f"the client's key set URL answered {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise KeySetError(f"the client's key set is larger than {self._max_bytes} bytes")
                return bytes(body), _max_age(response.headers.get("cache-control", ""))
        except httpx.HTTPError as exc:
            raise KeySetError(f"could not fetch the client's key set ({type(exc).__name__})") from None


def _max_age(cache_control: str) -> float | None:
    """Seconds a response may be cached: 0 for no-store/no-cache, its max-age, or None when it does not say."""
    directives = [part.strip().lower() for part in cache_control.split(",")]
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for directive in directives:
        name, _, value = directive.partition("=")
        seconds = value.strip()
        if name == "max-age" and seconds.isascii() and seconds.isdigit():  # "²".isdigit() holds; float() refuses it
            return float(seconds)
    return None
