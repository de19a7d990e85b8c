"""Recording LLM calls that do not go through the OpenAI SDK (a local model, another vendor's client).

``llmtap.log_interaction`` records one finished call; ``@llmtap.capture`` wraps a function whose first argument is
the prompt and whose return value is the response. Both produce the same span shape as the OpenAI capture, so the
calls show up in ``llmtap logs``, ``llmtap stats`` and the dashboards next to the others.
"""

import llmtap

llmtap.instrument(service_name="log-interaction-example", project="examples")

llmtap.log_interaction(
    "Translate 'good morning' to French.",
    "Bonjour.",
    model="llama-3.1-8b-instruct",
    provider="vllm",
    input_tokens=9,
    output_tokens=3,
)


@llmtap.capture(model="my-rules-engine", provider="internal")
def answer(prompt: str) -> str:
    return "42" if "meaning" in prompt else "I'm not sure."


print(answer("What is the meaning of life?"))
