"""The fake API over real HTTP/1.1 on 127.0.0.1: keep-alive, chunked SSE, and real connection cuts.

A stdlib ``ThreadingHTTPServer`` in a background thread; every decision about what to send is made by
``FakeOpenAI.handle``, this module only waits and writes.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmtap.fake_openai.protocol import FakeOpenAI, RecordedRequest
from llmtap.fake_openai.reply import Reply


class FakeOpenAIServer:
    """``with FakeOpenAIServer(**knobs) as server: OpenAI(base_url=server.base_url, api_key="x")``.

    ``port=0`` picks a free port. Knobs set here apply to every request; ``x-fake-*`` headers override them.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None, **knobs: Any
    ) -> None:
        self.app = FakeOpenAI(api_key=api_key, **knobs)
        self.host, self.port = host, port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (for Azure-style clients: ``azure_endpoint=server.url``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, the ``base_url`` of an OpenAI client."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.app.requests

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), _Handler, self.app)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"fake-openai:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join()
        self._httpd = self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI's foreground mode)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: FakeOpenAI
    ) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its keep-alive connection is normal: no traceback for it on the console.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close idle keep-alive connections so a stopped server leaves no thread waiting on a client."""
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streaming
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.app.handle(self.command, self.path, headers, self._read_body())
        try:
            self._send(reply)
        except OSError:  # the client went away mid-reply (closed a stream early): nothing left to do
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, reply: Reply) -> None:
        time.sleep(reply.latency)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.streaming:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.flush()
        for chunk in reply.chunks:
            time.sleep(chunk.delay)
            self.wfile.write(
                b"%x\r\n%s\r\n" % (len(chunk.data), chunk.data) if reply.streaming else chunk.data
            )
            self.wfile.flush()
        if reply.broken:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif reply.streaming:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the CLI print what matters
        pass
