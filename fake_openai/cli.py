"""``llmtap fake-openai``: the fake OpenAI server in the foreground, for trying apps and dashboards by hand."""

from __future__ import annotations

import click
from llmtap.fake_openai.knobs import ERROR_STATUSES, KnobError
from llmtap.fake_openai.server import FakeOpenAIServer


@click.command("fake-openai")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--api-key", default=None, help="Reject requests without this key (401), like the real API.")
@click.option("--latency-ms", type=float, help="Delay before every response.")
@click.option("--ttfc-ms", type=float, help="Delay before the first body chunk (time to first chunk).")
@click.option("--chunk-delay-ms", type=float, help="Delay between stream chunks.")
@click.option("--chunks", type=int, help="Content chunks per choice in a stream.")
@click.option(
    "--status",
    type=click.IntRange(ERROR_STATUSES.start, ERROR_STATUSES.stop - 1),
    help="Answer every request with this HTTP error.",
)
@click.option("--retry-after", type=float, help="Retry-After seconds sent with 429/503.")
@click.option("--break-after", type=int, help="Cut every stream after N events.")
@click.option("--malformed", is_flag=True, default=None, help="Send unparseable JSON bodies and SSE events.")
def fake_openai(port: int, host: str, api_key: str | None, **knobs: object) -> None:
    """Run the local OpenAI-compatible test server until Ctrl-C.

    Point any OpenAI client at the printed base URL with any API key. Every knob can also be set per request
    with an x-fake-<name> header (for example x-fake-status: 429).
    """
    try:
        server = FakeOpenAIServer(host, port, api_key=api_key, **knobs).start()
    except KnobError as exc:
        raise click.BadParameter(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"fake OpenAI API listening on {server.base_url} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
