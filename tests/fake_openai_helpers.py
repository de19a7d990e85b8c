"""Shared by the fake-openai test modules (``pytest_plugins = ["fake_openai_helpers"]``): a server fixture and an SDK
client fixture that runs each test body with both the sync and the async openai client.

No asserts live here (PYTEST_DONT_REWRITE): test modules import it before pytest loads it as a plugin.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from llmtap.fake_openai import FakeOpenAIServer

USER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def sdk_client(client_kind: str, fake_server: FakeOpenAIServer) -> AsyncIterator[Any]:
    """An ``OpenAI`` or ``AsyncOpenAI`` client of ``fake_server``: call it through ``resolve``/``collect``."""
    async with open_client(client_kind, fake_server.base_url) as client:
        yield client


@contextlib.asynccontextmanager
async def open_client(kind: str, base_url: str, **options: Any) -> AsyncIterator[Any]:
    """An ``OpenAI`` (kind "sync") or ``AsyncOpenAI`` client, closed afterwards; no retries unless asked."""
    options = {"api_key": "test-key", "max_retries": 0, **options}
    if kind == "sync":
        with openai.OpenAI(base_url=base_url, **options) as client:
            yield client
    else:
        async with openai.AsyncOpenAI(base_url=base_url, **options) as client:
            yield client


async def resolve(value: Any) -> Any:
    """The result of a sync call, or of an awaited async one."""
    return await value if inspect.isawaitable(value) else value


async def collect(stream: Any, into: list | None = None) -> list:
    """All items of a sync or async SDK stream; ``into`` keeps what arrived if iteration raises."""
    items = [] if into is None else into
    stream = await resolve(stream)
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            items.append(item)
    else:
        items.extend(stream)
    return items


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a cut stream raises from the SDK iterator: APIConnectionError (openai 3.x) or the raw transport error."""
    errors: list[type[BaseException]] = [openai.APIConnectionError]
    for module in ("httpx", "httpx2"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(module).TransportError)
    return tuple(errors)


def reset_mid_request(port: int) -> None:
    """Start a request on 127.0.0.1:``port`` and abort the connection (RST), as a crashing client does."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"POST /v1/chat/comp")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.3)  # the server thread reads, fails and (formerly) printed its traceback meanwhile
