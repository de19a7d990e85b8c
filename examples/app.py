"""The smallest instrumented app: run it as ``opentelemetry-instrument python examples/app.py``.

With ``llmtap serve`` running (or the docker-compose stack), the call below shows up in ``llmtap logs``.
Set ``OPENAI_BASE_URL`` to use any OpenAI-compatible server (``llmtap fake-openai`` needs no key).
"""

from openai import OpenAI

client = OpenAI()
reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hello to llmtap."}],
)
print(reply.choices[0].message.content)
