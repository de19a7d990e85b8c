"""Redaction, the size cap, content capture settings, custom attributes, the manual API and lifecycle guarantees."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from typing import Any

import openai
import pytest
from instrumentation_helpers import Pipeline, check_span
from llmtap.fake_openai.transport import http_client_class, sync_transport
from llmtap.instrumentation import content, operations, patching
from llmtap.instrumentation.redaction import build_redactor
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import llmtap

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline()


@pytest.fixture
def client():
    with openai.OpenAI(
        base_url="http://fake/v1",
        api_key="sk-test-key-never-recorded",
        max_retries=0,
        http_client=http_client_class()(transport=sync_transport()),
    ) as opened:
        yield opened


@pytest.fixture(autouse=True)
def clean(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch):
    for name in (
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "LLMTAP_REDACT",
        "LLMTAP_REDACT_PATTERNS",
        "LLMTAP_REDACT_HOOK",
        "LLMTAP_CONTENT_MAX_LENGTH",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    pipeline.uninstrument()


def chat(client: Any, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def recorded_input(pipeline: Pipeline) -> str:
    return json.loads(pipeline.one_span().attributes["gen_ai.input.messages"])[0]["parts"][0]["content"]


# ---- redaction ----------------------------------------------------------------------------------------------------

REDACTED = [
    ("mail jane.doe+x@mail.example.co.uk now", "mail [REDACTED:EMAIL] now"),
    ("call +1 (415) 555-0100 today", "call [REDACTED:PHONE] today"),
    ("call 030 12345678", "call [REDACTED:PHONE]"),
    ("card 4111 1111 1111 1111.", "card [REDACTED:CREDIT_CARD]."),
    (
        "card 4111-1111-1111-1111 and amex 378282246310005",
        "card [REDACTED:CREDIT_CARD] and amex [REDACTED:CREDIT_CARD]",
    ),
    ("iban DE89 3704 0044 0532 0130 00", "iban [REDACTED:IBAN]"),
    ("iban GB82WEST12345698765432", "iban [REDACTED:IBAN]"),
    ("ssn 123-45-6789", "ssn [REDACTED:US_SSN]"),
    ("host 192.168.1.10 up", "host [REDACTED:IP_ADDRESS] up"),
    ("v6 2001:db8::8a2e:370:7334 and ::1", "v6 [REDACTED:IP_ADDRESS] and [REDACTED:IP_ADDRESS]"),
    ("key sk-proj-abcdefghijklmnop1234", "key [REDACTED:API_KEY]"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwx", "Authorization: [REDACTED:API_KEY]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:API_KEY]"),
]
KEPT = [
    "card 4111 1111 1111 1112",  # fails the Luhn check
    "iban DE89 3704 0044 0532 0130 01",  # fails mod-97
    "on 2024-01-15 at 10:30:00",  # dates and times are not phones or IPv6
    "version 1.2.3, order #12345, 999.1.1.1",
    "Tell me a joke about cats.",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_builtin_detectors_redact(text: str, expected: str) -> None:
    redacted, count = build_redactor(environ={}).redact(text)
    assert redacted == expected
    assert count == expected.count("[REDACTED:")


@pytest.mark.parametrize("text", KEPT)
def test_builtin_detectors_leave_look_alikes(text: str) -> None:
    assert build_redactor(environ={}).redact(text) == (text, 0)


def test_redaction_selection_patterns_and_hook_from_env() -> None:
    environ = {
        "LLMTAP_REDACT": "email",
        "LLMTAP_REDACT_PATTERNS": json.dumps({"order": r"ORD-\d+"}),
        "LLMTAP_REDACT_HOOK": "string:capwords",
    }
    text, count = build_redactor(environ=environ).redact("a@b.co ORD-42 ssn 123-45-6789")
    assert (
        text == "[redacted:email] [redacted:order] Ssn 123-45-6789"
    )  # capwords ran last, after the patterns
    assert count == 3


def test_bad_redaction_config_is_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "LLMTAP_REDACT": "email,nonsense",
        "LLMTAP_REDACT_PATTERNS": '{"x": "("}',
        "LLMTAP_REDACT_HOOK": "no.such.module:f",
    }
    with caplog.at_level(logging.ERROR):
        redactor = build_redactor(environ=environ)
    assert redactor.redact("x@y.io") == ("[REDACTED:EMAIL]", 1)
    logged = caplog.text
    assert "NONSENSE" in logged and "'('" in logged and "no.such.module:f" in logged


def test_failing_hook_fails_closed() -> None:
    def hook(text: str) -> str:
        raise RuntimeError("boom")

    assert build_redactor(False, hook=hook, environ={}).redact("secret") == ("[REDACTED:HOOK_ERROR]", 1)


def test_redaction_on_spans_counts_and_hides_the_api_key(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument(redact_patterns={"TICKET": r"T-\d{4}"})
    chat(client, "I am bob@example.com, card 4111 1111 1111 1111, ticket T-1234")
    attrs = pipeline.one_span().attributes
    assert (
        recorded_input(pipeline)
        == "I am [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD], ticket [REDACTED:TICKET]"
    )
    assert attrs["llmtap.redaction.count"] == 3
    assert not any("sk-test-key" in str(v) for v in attrs.values())


def test_redaction_off(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument(redact=False)
    chat(client, "I am bob@example.com")
    assert recorded_input(pipeline) == "I am bob@example.com"
    assert "llmtap.redaction.count" not in pipeline.one_span().attributes


# ---- content settings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NO_CONTENT", "false", "False", "0"])
def test_capture_content_env_off(
    pipeline: Pipeline, client: Any, monkeypatch: pytest.MonkeyPatch, value: str
):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    pipeline.instrument(capture_content=None)
    chat(client, "hello", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    attrs = check_span(pipeline.one_span(), "chat", MODEL, server="fake")
    assert not {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"} & set(attrs)
    assert "llmtap.prompt.hash" in attrs and attrs["gen_ai.usage.output_tokens"] > 0


@pytest.mark.parametrize("value", ["", "SPAN_ONLY", "true", "SPAN_AND_EVENT"])
def test_capture_content_env_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", value)
    assert content.capture_enabled_from_env()


def test_size_cap_keeps_valid_json_and_marks_truncation(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument(max_content_length=600)
    chat(client, "word " * 1000)
    attrs = pipeline.one_span().attributes
    recorded = attrs["gen_ai.input.messages"]
    assert len(recorded) <= 600
    assert json.loads(recorded)[0]["parts"][0]["content"].endswith(content.TRUNCATION_MARK)
    assert attrs["llmtap.content.truncated"] is True


def test_fit_shortens_longest_strings_first() -> None:
    value = [
        {
            "role": "user",
            "parts": [{"type": "text", "content": "a" * 50}, {"type": "text", "content": "b" * 5000}],
        }
    ]
    encoded, truncated = content.fit(value, content.to_json(value), 1000)
    assert truncated and len(encoded) <= 1000
    parts = json.loads(encoded)[0]["parts"]
    assert parts[0]["content"] == "a" * 50 and parts[1]["content"].startswith("bbb")


def test_prompt_hash_is_stable_and_content_sensitive(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()
    chat(client, "same prompt")
    chat(client, "same prompt", temperature=0.9)
    chat(client, "another prompt")
    hashes = [span.attributes["llmtap.prompt.hash"] for span in pipeline.spans()]
    assert hashes[0] == hashes[1] != hashes[2]


# ---- custom attributes --------------------------------------------------------------------------------------------


def test_attributes_nest_merge_and_reset(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()
    with llmtap.attributes(user_id="u1", session_id="s1", tags=["a"], feature="search", cfg={"k": 1}):
        with llmtap.attributes(tags=["b", "a"], feature="rerank", rank=2, ok=True, ratio=0.5):
            chat(client, "x")
        chat(client, "y")
    chat(client, "z")
    inner, outer, bare = (span.attributes for span in pipeline.spans())
    assert inner["user.id"] == "u1" and inner["session.id"] == "s1"
    assert inner["llmtap.tags"] == ("a", "b")
    assert inner["llmtap.attr.feature"] == "rerank" and inner["llmtap.attr.rank"] == 2
    assert inner["llmtap.attr.ok"] is True and inner["llmtap.attr.ratio"] == 0.5
    assert inner["llmtap.attr.cfg"] == '{"k":1}'
    assert outer["llmtap.tags"] == ("a",) and outer["llmtap.attr.feature"] == "search"
    assert not any(key.startswith(("llmtap.attr.", "llmtap.tags", "session.id")) for key in bare)


def test_attributes_decorator_async_tasks_and_threads(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()

    @llmtap.attributes(session_id="deco")
    def decorated() -> None:
        chat(client, "1")

    @llmtap.attributes(session_id="async-deco")
    async def decorated_async() -> None:
        await asyncio.sleep(0)  # crosses an await
        await asyncio.to_thread(chat, client, "2")

    decorated()
    asyncio.run(decorated_async())
    with llmtap.attributes(session_id="thread"):
        worker = threading.Thread(target=contextvars.copy_context().run, args=(chat, client, "3"))
    worker.start()
    worker.join()
    sessions = [span.attributes["session.id"] for span in pipeline.spans()]
    assert sessions == ["deco", "async-deco", "thread"]


# ---- behaviour guarantees -----------------------------------------------------------------------------------------


def test_parent_context_is_preserved(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()
    tracer = pipeline.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        chat(client, "x")
        assert trace.get_current_span() is parent
    llm, handler = pipeline.spans()
    assert llm.parent is not None and llm.parent.span_id == handler.context.span_id
    assert llm.context.trace_id == handler.context.trace_id


def test_internal_errors_never_reach_the_app(pipeline: Pipeline, client: Any, monkeypatch, caplog) -> None:
    def broken(_response: Any) -> dict:
        raise RuntimeError("bug in llmtap")

    broken_chat = operations.Operation(
        "chat", operations.chat_request, broken, operations.chat_request_content
    )
    pipeline.instrument()
    monkeypatch.setattr(operations, "CHAT", broken_chat)
    pipeline.instrument()  # re-patch with the broken operation
    with caplog.at_level(logging.WARNING, logger="llmtap.instrumentation"):
        first = chat(client, "x")
        second = chat(client, "x")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert caplog.text.count("internal error in recording a response") == 1  # logged once, not per call
    assert len(pipeline.spans()) == 2 and all(span.end_time for span in pipeline.spans())


def test_uninstrument_restores_the_original_methods(pipeline: Pipeline) -> None:
    from openai.resources.chat.completions import Completions

    original = Completions.create
    pipeline.instrument()
    assert Completions.create is not original and patching.patched_methods()
    llmtap.uninstrument()
    assert Completions.create is original and not patching.patched_methods()


def test_metrics_use_the_conventions_buckets(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()
    chat(client, "x")
    (duration,) = [
        p
        for p in pipeline.metric_points("gen_ai.client.operation.duration")
        if p.attributes["gen_ai.request.model"] == MODEL
    ][-1:]
    assert (
        duration.explicit_bounds[:3] == (0.01, 0.02, 0.04)
        and duration.attributes["gen_ai.operation.name"] == "chat"
    )
    tokens = pipeline.metric_points("gen_ai.client.token.usage")
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}
    assert tokens[0].explicit_bounds[:3] == (1, 4, 16)


# ---- manual API ---------------------------------------------------------------------------------------------------


def test_log_interaction_has_the_same_span_shape(pipeline: Pipeline) -> None:
    pipeline.instrument()
    with llmtap.attributes(user_id="u9"):
        llmtap.log_interaction(
            "Mail me at a@b.io",
            "Sure.",
            model="llama3",
            provider="ollama",
            system="Be kind.",
            input_tokens=5,
            output_tokens=2,
            duration=0.25,
            server_address="127.0.0.1",
            server_port=11434,
            temperature=0.1,
            attributes={"route": "/ask"},
            metadata={"ticket": 7},
        )
    span = pipeline.one_span()
    attrs = span.attributes
    assert span.name == "chat llama3" and span.kind is trace.SpanKind.CLIENT
    assert attrs["gen_ai.provider.name"] == "ollama" and attrs["user.id"] == "u9"
    assert abs((span.end_time - span.start_time) / 1e9 - 0.25) < 1e-6
    assert (
        json.loads(attrs["gen_ai.input.messages"])[0]["parts"][0]["content"] == "Mail me at [REDACTED:EMAIL]"
    )
    assert json.loads(attrs["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be kind."}]
    assert json.loads(attrs["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "Sure."}]
    assert attrs["gen_ai.usage.input_tokens"] == 5 and attrs["llmtap.attr.route"] == "/ask"
    assert attrs["llmtap.metadata.ticket"] == "7" and attrs["llmtap.redaction.count"] == 1


def test_log_interaction_error_and_bad_input_never_raise(pipeline: Pipeline) -> None:
    pipeline.instrument()
    llmtap.log_interaction([{"role": "user", "content": "hi"}], None, model="m", error="RateLimit")
    llmtap.log_interaction(object(), object(), model=123, duration="soon")  # type: ignore[arg-type]
    span = pipeline.spans()[0]
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "RateLimit"


def test_capture_decorator_sync_and_async(pipeline: Pipeline) -> None:
    pipeline.instrument()

    @llmtap.capture(model="local-7b", provider="vllm")
    def ask(prompt: str) -> str:
        return prompt.upper()

    @llmtap.capture
    async def ask_async(prompt: str, model: str) -> str:
        raise ValueError("model offline")

    assert ask("hi") == "HI"
    with pytest.raises(ValueError, match="model offline"):
        asyncio.run(ask_async("hi", model="other"))
    ok, failed = pipeline.spans()
    assert ok.name == "chat local-7b" and ok.attributes["gen_ai.provider.name"] == "vllm"
    assert json.loads(ok.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "HI"
    assert failed.name == "chat other" and failed.attributes["error.type"] == "ValueError"


def test_import_llmtap_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, llmtap; assert callable(llmtap.instrument); print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_user_prompt_shape_is_kept_for_multimodal_input(pipeline: Pipeline, client: Any) -> None:
    pipeline.instrument()
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
    )
    parts = json.loads(pipeline.one_span().attributes["gen_ai.input.messages"])[0]["parts"]
    assert parts == [
        {"type": "text", "content": "What is this?"},
        {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"},
        {"type": "blob", "modality": "image", "content": "iVBORw0KGgo=", "mime_type": "image/png"},
    ]
