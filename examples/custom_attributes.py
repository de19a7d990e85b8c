"""Your own attributes on every LLM span: users, sessions, tags and anything else.

``llmtap.attributes`` works as a context manager and as a decorator; nested blocks merge (tags accumulate), the
values cross ``await`` and follow ``contextvars`` into threads. OpenAI's own ``metadata=`` is recorded as well.
Query them back with ``llmtap logs --user alice --tag checkout --attr plan=pro``.
"""

from openai import OpenAI

import llmtap

llmtap.instrument(service_name="custom-attributes-example", project="examples")
client = OpenAI()


@llmtap.attributes(tags=["checkout"], feature="order-summary")
def summarise(order_id: int) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"Summarise order {order_id}."}],
        metadata={"order_id": str(order_id)},
    )
    return reply.choices[0].message.content or ""


with llmtap.attributes(user_id="alice", session_id="s-1", plan="pro"):
    print(summarise(1234))
