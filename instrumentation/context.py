"""``llmtap.attributes(...)``: the caller's own attributes on every LLM span started inside.

Stored in a ContextVar, so they follow ``await``, asyncio tasks and threads started through
``contextvars.copy_context().run`` (or ``asyncio.to_thread``), and never leak between concurrent requests.
Values are converted to span attribute form once, when the context is entered, so the per-call cost is one dict
merge.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from llmtap.instrumentation import semconv
from llmtap.instrumentation.content import to_json

F = TypeVar("F", bound=Callable[..., Any])
AttributeValue = str | bool | int | float | tuple[str, ...]

_NONE: Mapping[str, AttributeValue] = MappingProxyType({})
_CURRENT: contextvars.ContextVar[Mapping[str, AttributeValue]] = contextvars.ContextVar(
    "llmtap_attributes", default=_NONE
)


def current() -> Mapping[str, AttributeValue]:
    """The attributes in force here."""
    return _CURRENT.get()


def attribute_value(value: Any) -> AttributeValue | None:
    """A value the OTel SDK accepts without warnings: scalars as they are, string lists as tuples, else JSON."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return to_json(value)


def _merge_tags(existing: Any, new: Iterable[str] | str) -> tuple[str, ...]:
    tags = list(existing or ())
    for tag in [new] if isinstance(new, str) else new:
        tag = str(tag)
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


class attributes:
    """Add ``user.id``, ``session.id``, ``llmtap.tags`` and ``llmtap.attr.<key>`` to LLM spans started inside.

    Nested contexts merge (inner values win, tags accumulate). Usable as a context manager (sync or async) and as
    a decorator of sync or async functions.
    """

    def __init__(
        self,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | str | None = None,
        **custom: Any,
    ) -> None:
        self._user_id = user_id
        self._session_id = session_id
        self._tags = tags
        self._custom = {}
        for key, value in custom.items():
            converted = attribute_value(value)
            if converted is not None:
                self._custom[semconv.ATTR_PREFIX + key] = converted
        self._tokens: list[contextvars.Token[Mapping[str, AttributeValue]]] = []

    def _merged(self) -> dict[str, AttributeValue]:
        merged = dict(_CURRENT.get())
        if self._user_id is not None:
            merged[semconv.USER_ID] = str(self._user_id)
        if self._session_id is not None:
            merged[semconv.SESSION_ID] = str(self._session_id)
        if self._tags is not None:
            merged[semconv.TAGS] = _merge_tags(merged.get(semconv.TAGS), self._tags)
        merged.update(self._custom)
        return merged

    def __enter__(self) -> attributes:
        self._tokens.append(_CURRENT.set(self._merged()))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    async def __aenter__(self) -> attributes:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func: F) -> F:
        # Each call enters a fresh context, so one decorated function can run concurrently in many tasks.
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _CURRENT.set(self._merged())
                try:
                    return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _CURRENT.set(self._merged())
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return wrapper  # type: ignore[return-value]
