"""Shared by the fake-openai test modules: one test body drives both the sync and the async openai client."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import openai

USER = [{"role": "user", "content": "What is the weather like in Paris today?"}]


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
