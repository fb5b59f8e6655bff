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
    that stops delivering without a reset does (nothing tells the client); ``cut_after(marker)``
    lets the next message holding ``marker`` reach the server and cuts the link before its answer
    comes back (a COMMIT the server carried out while the client never heard); ``mend()`` lets
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
        self.marker: bytes | None = None
        self.answers_held = threading.Event()
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
            for a, b, to_server in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, to_server), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                if not to_server and self.answers_held.is_set():
                    continue  # the answer is lost with the link
                marker = self.marker
                if to_server and marker is not None and marker in data:
                    self.marker = None
                    self.answers_held.set()
                    sink.sendall(data)
                    threading.Timer(0.3, self.cut).start()  # the server has it by then
                    continue
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

    def cut_after(self, marker: bytes) -> None:
        self.marker = marker

    def mend(self) -> None:
        with self.lock:
            self.open = True
        self.answers_held.clear()
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
