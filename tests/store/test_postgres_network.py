"""The PostgreSQL store's connections give up on a silent server: libpq's defaults would wait
without end to connect, and hours (keepalives) or ~15 minutes (unacknowledged data) for a path
that stopped carrying bytes without a reset. Settings the store URL gives win."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gateway.store import StoreUnavailable, open_store
from gateway.store.postgres import NETWORK_DEFAULTS, PostgresStore, with_network_defaults
from tests.conftest import PG_URL


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_every_connection_of_the_store_has_the_network_defaults(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    assert isinstance(store, PostgresStore)
    try:
        store.read("Patient", "nobody")  # a pooled read connection
        with store.transaction():  # the writer's connection
            pass
        with store._pool.connection() as conn:
            reader = conn.info.get_parameters()
        writer_conn = store._writer._conn
        assert writer_conn is not None
        writer = writer_conn.info.get_parameters()
    finally:
        store.close()
    for parameters in (reader, writer):
        for name, value in NETWORK_DEFAULTS.items():
            assert parameters.get(name) == value, (name, parameters)


def test_the_store_url_settings_win() -> None:
    tuned = with_network_defaults(f"{PG_URL}?keepalives_idle=5&connect_timeout=3")
    assert "keepalives_idle=5" in tuned and "connect_timeout=3" in tuned
    assert "keepalives_idle=30" not in tuned and "connect_timeout=10" not in tuned
    assert "tcp_user_timeout=60000" in tuned  # what it does not set is still given


@pytest.mark.parametrize("query", ["?connect_timeout=1&schema=s1", "?schema=s1"])
def test_a_server_that_never_answers_is_unavailable_not_a_hang(query: str) -> None:
    limit = 1 if "connect_timeout=1" in query else int(NETWORK_DEFAULTS["connect_timeout"])
    with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            open_store(f"postgresql://postgres@127.0.0.1:{port}/test{query}")
        took = time.monotonic() - started
    # libpq may try the address twice (with and without SSL): within a few times the limit, not never.
    assert limit * 0.9 <= took < limit * 4 + 5, took
