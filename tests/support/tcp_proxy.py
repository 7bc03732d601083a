"""A TCP proxy on loopback that a test can cut: an outage, without losing the server's state.

While cut, new connections are closed at once and open ones are dropped, which a client sees
as a connection error — what an endpoint outage looks like. A black hole is the other kind of
partition: packets are dropped, not refused, so nothing tells the client; its connections
hang. Connections caught in a black hole stay dead after `restore` (by then TCP would have
given up on them); only new ones get through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._black_hole = threading.Event()
        self._open: set[socket.socket] = set()
        # One event per connection: set once it fell into a black hole.
        self._lost: set[threading.Event] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def black_hole(self) -> None:
        """Drop every byte of open and new connections from now on, answering nothing."""
        self._black_hole.set()
        with self._lock:
            for lost in self._lost:
                lost.set()

    def restore(self) -> None:
        self._cut.clear()
        self._black_hole.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # an idle watch is no reason to close a connection
            lost = threading.Event()
            if self._black_hole.is_set():
                lost.set()
            with self._lock:
                self._open.update({client, upstream})
                self._lost.add(lost)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, lost), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, lost: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not lost.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
                with self._lock:
                    self._open.discard(end)
                    self._lost.discard(lost)
