"""A loopback HTTP file server for download tests: Range on/off, and dropped connections."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class ServedFile:
    """One file the server offers; `data` may be replaced between requests (a changed upstream)."""

    data: bytes
    etag: str = '"v1"'


@dataclass
class FileServer:
    """Serves `files` on 127.0.0.1.

    Attributes:
        range_support: Honour `Range: bytes=N-` with 206 (else always 200 + the whole file).
        drop_after: Close the connection after this many body bytes ...
        drops: ... this many times (then serve normally).
        requests: (path, Range header or None, status) of every request, for assertions.
    """

    files: dict[str, ServedFile]
    range_support: bool = True
    drop_after: int | None = None
    drops: int = 1
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_paths(paths: dict[str, Path], **kwargs: Any) -> FileServer:
    """A FileServer over files on disk (read into memory once)."""
    return FileServer({k: ServedFile(p.read_bytes()) for k, p in paths.items()}, **kwargs)


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return None

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            served = server.files.get(name)
            rng = self.headers.get("Range")
            if served is None:
                server.requests.append((name, rng, 404))
                self.send_error(404)
                return
            start = self._range_start(served, rng)
            status = 206 if start else 200
            server.requests.append((name, rng, status))
            body = served.data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", served.etag)
            if status == 206:
                total = len(served.data)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.end_headers()
            if server.drop_after is not None and server.drops > 0:
                server.drops -= 1
                self.wfile.write(body[: server.drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the peer sees a truncated body
                self.close_connection = True
                return
            for i in range(0, len(body), 1 << 20):
                self.wfile.write(body[i : i + (1 << 20)])

        def _range_start(self, served: ServedFile, rng: str | None) -> int:
            if not (server.range_support and rng):
                return 0
            match = _RANGE.match(rng)
            if_range = self.headers.get("If-Range")
            if not match or (if_range is not None and if_range != served.etag):
                return 0  # a changed file is sent whole, as RFC 9110 If-Range requires
            return min(int(match.group(1)), len(served.data))

    return Handler
