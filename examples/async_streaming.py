"""An asyncio app streaming two chat completions concurrently.

Run it as ``opentelemetry-instrument python examples/async_streaming.py``: each stream becomes one span that ends
when the stream is exhausted, with the time to first chunk and the usage of the final chunk. The event loop is never
blocked by the instrumentation.
"""

import asyncio

from openai import AsyncOpenAI


async def ask(client: AsyncOpenAI, question: str) -> str:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def main() -> None:
    client = AsyncOpenAI()
    answers = await asyncio.gather(ask(client, "Name a red fruit."), ask(client, "Name a green vegetable."))
    for answer in answers:
        print(answer)
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
