# The llmtap image of docker-compose.yml's `demo` profile: `llmtap fake-openai` (a local OpenAI-compatible server)
# and the sample app run under `opentelemetry-instrument`. The production stack itself needs no build.
FROM python:3.13.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The package's folders, as pyproject.toml's package-dir maps them.
COPY pyproject.toml README.md ./
COPY src ./src
COPY instrumentation ./instrumentation
COPY collector ./collector
COPY clickhouse ./clickhouse
COPY grafana ./grafana
COPY fake_openai ./fake_openai
COPY examples ./examples
RUN pip install ".[demo]" && rm -rf /src

RUN useradd --create-home --uid 10001 llmtap
USER llmtap
WORKDIR /home/llmtap

CMD ["llmtap", "--help"]
