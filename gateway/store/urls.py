"""A store URL's own options, read and checked without opening anything (no driver needed).

``settings`` checks ``store_url`` with :func:`check_store_url`, so a bad option is refused as
a setting (``config check``, every command) instead of surfacing when a store opens; the
backends read the same options with the functions below.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["check_store_url", "pool_timeout", "schema_name", "split_params", "sqlite_options"]

#: The gateway's own query parameters of a PostgreSQL URL (libpq would refuse them).
OWN_PARAMS = ("schema", "pool_timeout")
#: How long a read waits for a pooled connection by default (seconds; ``?pool_timeout=`` sets it).
POOL_TIMEOUT = 30.0


def split_params(url: str) -> tuple[str, dict[str, str]]:
    """Take the gateway's own query parameters (``schema``, ``pool_timeout``) out of a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    own = {k: v for k, v in query if k in OWN_PARAMS}
    rest = urlencode([(k, v) for k, v in query if k not in OWN_PARAMS])
    return urlunsplit(parts._replace(query=rest)), own


def pool_timeout(raw: str | None) -> float:
    """``?pool_timeout=`` in seconds (0.1 to 3600), or the default."""
    if raw is None:
        return POOL_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise ValueError(f"pool_timeout must be seconds between 0.1 and 3600, not {raw[:20]!r}")
    return seconds


def schema_name(raw: str | None) -> str | None:
    """``?schema=``: letters, digits and underscores (it is written into SQL as an identifier)."""
    if raw is not None and not raw.replace("_", "").isalnum():
        raise ValueError("schema must be letters, digits and underscores")
    return raw


def sqlite_options(url: str) -> tuple[str, str]:
    """The path of a ``sqlite:///path[?synchronous=full|normal]`` URL and its ``synchronous`` level."""
    path, _, query = url[len("sqlite:///") :].partition("?")
    options = dict(parse_qsl(query))
    synchronous = options.pop("synchronous", "full").upper()
    if options or synchronous not in ("FULL", "NORMAL"):
        raise ValueError("sqlite store URLs take one option: ?synchronous=full|normal")
    return path, synchronous


def check_store_url(url: str) -> None:
    """Raise ``ValueError`` for a store URL whose own options the store would refuse on opening."""
    if url.startswith("sqlite:///"):
        sqlite_options(url)
    elif url.startswith(("postgresql://", "postgres://")):
        _, own = split_params(url)
        schema_name(own.get("schema"))
        pool_timeout(own.get("pool_timeout"))
    else:
        raise ValueError("store URL must start with sqlite:/// or postgresql://")
