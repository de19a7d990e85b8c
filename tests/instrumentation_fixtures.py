"""Fixtures of the tests that drive the real SDK against the fake server, imported by those modules (pytest takes
fixtures from a test module's names, autouse ones included)."""

from __future__ import annotations

import logging

import pytest
from instrumentation_helpers import AttributeWarnings, Pipeline
from llmtap.fake_openai import FakeOpenAIServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline()


@pytest.fixture
def no_attribute_warnings(pipeline: Pipeline):
    """Each test starts uninstrumented and leaves no OpenTelemetry attribute warning behind."""
    pipeline.uninstrument()
    handler = AttributeWarnings()
    logger = logging.getLogger("opentelemetry")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    pipeline.uninstrument()
    assert not handler.messages


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param
