"""A TCP link to the test PostgreSQL server that a test can cut, stall and mend, as a database
restart, a failover, a network cut or a server that stops answering would."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from tests.conftest import PG_URL


class CuttableLink:
    """A TCP forwarder to the PostgreSQL server: ``cut()`` drops every connection through it and
    refuses new ones, as a database restart or a network cut does; ``stall()`` keeps every
    connection open but carries no more bytes either way, as a frozen server or a network path
    that stops delivering without a reset does (nothing tells the client); ``mend()`` lets
    connections in and bytes through again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.flowing = threading.Event()
        self.flowing.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.open:
                    client.close()
                    continue
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            self.open = False
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets.clear()

    def stall(self) -> None:
        self.flowing.clear()

    def mend(self) -> None:
        with self.lock:
            self.open = True
        self.flowing.set()

    def close(self) -> None:
        self.cut()
        self.flowing.set()  # held bytes meet closed sockets: the pipes end
        self.listener.close()


@contextmanager
def linked_schema_url() -> Iterator[tuple[str, str, CuttableLink]]:
    """(store URL through a ``CuttableLink``, the same schema's direct URL, the link): a fresh schema,
    dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(PG_URL)
    link = CuttableLink(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = f"{parts.username}@" if parts.username else ""
    try:
        yield f"postgresql://{user}127.0.0.1:{link.port}{parts.path}?schema={schema}", f"{PG_URL}?schema={schema}", link
    finally:
        link.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
