"""The sample application `llmtap demo` runs under `opentelemetry-instrument`.

It is an ordinary OpenAI SDK app: nothing in it knows about spans. It makes a realistic mix of calls (chat,
streaming, tool calls, embeddings, Responses API) for several users with tags, including some that fail and some
that are rate limited, and writes how many calls it made to the file named by ``SAMPLE_APP_REPORT`` so the demo can
check that every one of them was stored.

Environment: ``OPENAI_BASE_URL`` (the local fake server), ``SAMPLE_APP_CALLS`` (default 40),
``SAMPLE_APP_SEED``, ``SAMPLE_APP_REPORT``.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable

import openai
from openai import OpenAI

import llmtap

USERS = ["alice", "bob", "carol", "dave"]
TAGS = [["checkout"], ["support", "priority"], ["search"], ["onboarding"]]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Per-call knobs understood by the local OpenAI-compatible server.
FAIL = {"x-fake-status": "500"}
RATE_LIMITED = {"x-fake-status": "429", "x-fake-retry-after": "0"}
BAD_REQUEST = {"x-fake-status": "400"}


def chat(client: OpenAI, rng: random.Random, headers: dict[str, str]) -> None:
    client.chat.completions.create(
        model=rng.choice(["gpt-4o-mini", "gpt-4o"]),
        messages=[
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Summarise order #{rng.randint(1000, 9999)} for me."},
        ],
        temperature=0.2,
        extra_headers=headers,
    )


def stream(client: OpenAI, rng: random.Random, headers: dict[str, str]) -> None:
    chunks = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Write a haiku about observability."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-chunks": str(rng.randint(5, 20)), **headers},
    )
    "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tools(client: OpenAI, rng: random.Random, headers: dict[str, str]) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": f"What's the weather in {rng.choice(['Paris', 'Oslo', 'Lima'])}?"}
        ],
        tools=[WEATHER_TOOL],
        extra_headers=headers,
    )


def embed(client: OpenAI, rng: random.Random, headers: dict[str, str]) -> None:
    client.embeddings.create(
        model="text-embedding-3-small", input=[f"document {rng.randint(1, 99)}"], extra_headers=headers
    )


def respond(client: OpenAI, rng: random.Random, headers: dict[str, str]) -> None:
    client.responses.create(model="gpt-4.1-mini", input="Name three prime numbers.", extra_headers=headers)


CALLS: list[Callable[[OpenAI, random.Random, dict[str, str]], None]] = [
    chat,
    chat,
    stream,
    tools,
    embed,
    respond,
]


def main() -> int:
    total = int(os.environ.get("SAMPLE_APP_CALLS", "40"))
    rng = random.Random(int(os.environ.get("SAMPLE_APP_SEED", "7")))
    client = OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "sk-local-demo"), max_retries=0)
    made = failed = 0
    for i in range(total):
        call = rng.choice(CALLS)
        roll = rng.random()
        headers = FAIL if roll < 0.05 else RATE_LIMITED if roll < 0.10 else BAD_REQUEST if roll < 0.12 else {}
        user = rng.randrange(len(USERS))
        with llmtap.attributes(user_id=USERS[user], session_id=f"s-{user}-{i // 10}", tags=TAGS[user]):
            made += 1
            try:
                call(client, rng, headers)
            except openai.APIError:
                failed += 1
        print(f"call {i + 1}/{total}", flush=True)
    report = {"calls": made, "failed": failed}
    if path := os.environ.get("SAMPLE_APP_REPORT"):
        with open(path, "w") as fh:
            json.dump(report, fh)
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
