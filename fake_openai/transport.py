"""In-process transports: the fake API inside an httpx/httpx2 client, no sockets, same bytes and timing.

``OpenAI(base_url="http://fake/v1", api_key="x", http_client=DefaultHttpxClient(transport=sync_transport()))``.
openai 3.x talks through httpx2, openai 1.x/2.x through httpx; ``http_module()`` finds the one the installed
openai uses, and ``module="httpx"``/``"httpx2"`` picks one explicitly (openai 3.x accepts both).
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from types import ModuleType
from typing import Any

import anyio
from llmtap.fake_openai.protocol import FakeOpenAI, RecordedRequest
from llmtap.fake_openai.reply import Reply

MODULES = ("httpx2", "httpx")
BROKEN_MESSAGE = "peer closed connection without sending complete message body (incomplete chunked read)"


def http_module(module: str | None = None) -> ModuleType:
    """The HTTP client library the installed openai SDK is built on (or ``module`` when given)."""
    if module is not None:
        if module not in MODULES:
            raise ValueError(f"module must be one of {', '.join(MODULES)}, not {module!r}")
        return importlib.import_module(module)
    try:
        import openai
    except ImportError:
        pass
    else:
        for cls in openai.DefaultHttpxClient.__mro__:
            root = cls.__module__.partition(".")[0]
            if root in MODULES:
                return sys.modules[root]
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("fake_openai transports need httpx2 or httpx; install openai")


def http_client_class(module: str | None = None) -> type:
    """``httpx2.Client`` or ``httpx.Client``, whichever ``http_module`` picks."""
    return http_module(module).Client


def async_http_client_class(module: str | None = None) -> type:
    """``httpx2.AsyncClient`` or ``httpx.AsyncClient``, whichever ``http_module`` picks."""
    return http_module(module).AsyncClient


def sync_transport(*, module: str | None = None, **options: Any) -> Any:
    """A sync transport serving the fake API in-process; ``.requests`` logs what it received.

    ``options`` are ``FakeOpenAI``'s: knobs, ``api_key``, ``record_requests``.
    """
    return _classes(http_module(module).__name__)[0](FakeOpenAI(**options))


def async_transport(*, module: str | None = None, **options: Any) -> Any:
    """An async transport serving the fake API in-process; waits with ``anyio.sleep``, never blocking the loop."""
    return _classes(http_module(module).__name__)[1](FakeOpenAI(**options))


def _framing(reply: Reply) -> list[tuple[str, str]]:
    """The headers the socket server adds, so both deliveries look the same to the client."""
    framing = (
        ("transfer-encoding", "chunked") if reply.streaming else ("content-length", str(len(reply.body)))
    )
    return [*reply.headers, framing]


class _Serving:
    """What both transports share: the app they serve and its request log."""

    def __init__(self, app: FakeOpenAI) -> None:
        self.app = app

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.app.requests


class _Delivery:
    """What both byte streams share: the reply to deliver and the request (for the error of a cut stream)."""

    def __init__(self, reply: Reply, request: Any) -> None:
        self.reply, self.request = reply, request


@functools.cache
def _classes(module_name: str) -> tuple[type, type]:
    """Transport classes built on ``module_name``'s base classes (httpx and httpx2 check them with isinstance)."""
    httpx = importlib.import_module(module_name)

    class SyncReplyStream(_Delivery, httpx.SyncByteStream):
        def __iter__(self):
            for chunk in self.reply.chunks:
                time.sleep(chunk.delay)
                yield chunk.data
            if self.reply.broken:
                raise httpx.RemoteProtocolError(BROKEN_MESSAGE, request=self.request)

    class AsyncReplyStream(_Delivery, httpx.AsyncByteStream):
        async def __aiter__(self):
            for chunk in self.reply.chunks:
                await anyio.sleep(chunk.delay)
                yield chunk.data
            if self.reply.broken:
                raise httpx.RemoteProtocolError(BROKEN_MESSAGE, request=self.request)

    class FakeOpenAITransport(_Serving, httpx.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            reply = _handle(self.app, request, request.read())
            time.sleep(reply.latency)
            return httpx.Response(
                reply.status, headers=_framing(reply), stream=SyncReplyStream(reply, request)
            )

    class AsyncFakeOpenAITransport(_Serving, httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            reply = _handle(self.app, request, await request.aread())
            await anyio.sleep(reply.latency)
            return httpx.Response(
                reply.status, headers=_framing(reply), stream=AsyncReplyStream(reply, request)
            )

    return FakeOpenAITransport, AsyncFakeOpenAITransport


def _handle(app: FakeOpenAI, request: Any, body: bytes) -> Reply:
    target = request.url.raw_path.decode("ascii")
    headers = {name.lower(): value for name, value in request.headers.items()}
    return app.handle(request.method, target, headers, body)
