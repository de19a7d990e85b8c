"""The fake OpenAI API as a pure function of a request: route, check, answer — no sockets, no sleeping.

``FakeOpenAI.handle`` turns (method, path, headers, body) into a ``Reply``; the socket server and the in-process
transports only deliver that reply, which is why both produce the same bytes.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llmtap.fake_openai.call import Call
from llmtap.fake_openai.chat import chat_completions
from llmtap.fake_openai.completions import completions
from llmtap.fake_openai.embeddings import embeddings
from llmtap.fake_openai.errors import APIError, invalid
from llmtap.fake_openai.knobs import KnobError, Knobs
from llmtap.fake_openai.models import list_models, retrieve_model
from llmtap.fake_openai.reply import Event, Reply, json_reply, stream_reply
from llmtap.fake_openai.responses import responses
from llmtap.fake_openai.text import short_hash

Handler = Callable[[Call], "dict | list[Event]"]

# OpenAI (/v1/...) and Azure OpenAI (/openai/deployments/<name>/..., /openai/v1/...) paths share the handlers.
_PREFIX = r"(?:/v1|/openai(?:/v1|/deployments/(?P<deployment>[^/]+))?)"
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (method, re.compile(_PREFIX + suffix + "/?"), handler)
    for method, suffix, handler in (
        ("POST", "/chat/completions", chat_completions),
        ("POST", "/responses", responses),
        ("POST", "/embeddings", embeddings),
        ("POST", "/completions", completions),
        ("GET", "/models", list_models),
        ("GET", "/models/(?P<model>[^/]+)", retrieve_model),
    )
]


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it (header names lower-case), for tests to inspect."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class FakeOpenAI:
    """The fake API: server-wide knobs, an optional API key to enforce, and the log of requests received.

    ``record_requests=False`` keeps ``requests`` empty, so long benchmark runs do not grow in memory.
    """

    def __init__(self, *, api_key: str | None = None, record_requests: bool = True, **knobs: Any) -> None:
        self.knobs = Knobs.from_kwargs(**knobs)
        self.api_key = api_key
        self.record_requests = record_requests
        self.requests: list[RecordedRequest] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """The complete reply to one HTTP request. ``headers`` must have lower-case names."""
        path = urlsplit(target).path
        with self._lock:
            sequence = next(self._sequence)
            if self.record_requests:
                self.requests.append(RecordedRequest(method, path, dict(headers), body))
        knobs = self.knobs
        reply_headers = {
            "x-request-id": "req_" + short_hash(sequence, body, length=32),
            "openai-version": "2020-10-01",
        }
        try:
            knobs = knobs.with_headers(headers)
            reply_headers["openai-processing-ms"] = str(round(knobs.latency_ms + knobs.ttfc_ms))
            self._inject_error(knobs, headers)
            handler, params = self._route(method, path)
            self._authenticate(headers)
            call = Call(_parse_body(body) if method == "POST" else {}, knobs, sequence, body, params)
            result = handler(call)
        except KnobError as exc:
            error = invalid(str(exc), exc.source, "invalid_fake_knob")
            return json_reply(error.status, error.body(), knobs, reply_headers)
        except APIError as error:
            return json_reply(error.status, error.body(), knobs, {**reply_headers, **error.headers})
        if isinstance(result, list):
            return stream_reply(result, knobs, reply_headers)
        return json_reply(200, result, knobs, reply_headers)

    def _inject_error(self, knobs: Knobs, headers: Mapping[str, str]) -> None:
        if knobs.status is None:
            return
        retry_count = headers.get("x-stainless-retry-count", "0")
        attempt = int(retry_count) if retry_count.isdigit() else 0
        if knobs.error_attempts is None or attempt < knobs.error_attempts:
            raise APIError.for_status(knobs.status, knobs.retry_after)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        if self.api_key is None:
            return
        bearer = headers.get("authorization", "")
        if bearer != f"Bearer {self.api_key}" and headers.get("api-key") != self.api_key:
            raise APIError.for_status(401)

    @staticmethod
    def _route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = []
        for route_method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match:
                if route_method == method:
                    return handler, {key: value for key, value in match.groupdict().items() if value}
                allowed.append(route_method)
        if allowed:
            raise APIError(405, f"Method {method} is not allowed on {path}; use {' or '.join(allowed)}.")
        raise APIError(404, f"Invalid URL ({method} {path})")


def _parse_body(body: bytes) -> dict:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
        )
    return parsed
