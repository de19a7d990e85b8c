"""POST /v1/completions, the legacy text-completion endpoint (gpt-3.5-turbo-instruct), plain and streaming."""

from __future__ import annotations

from llmtap.fake_openai.answers import Format, compose
from llmtap.fake_openai.call import Call, system_fingerprint
from llmtap.fake_openai.errors import invalid
from llmtap.fake_openai.reply import DONE, Event
from llmtap.fake_openai.text import seed_of, split_pieces, words_in
from llmtap.fake_openai.usage import Usage

LEGACY_MAX_TOKENS = 16  # the endpoint's own default: answers are often cut ("length")


def completions(call: Call) -> dict | list[Event]:
    model = call.model()
    prompts = _prompts(call)
    n = call.count("n", 1, maximum=128)
    max_tokens = call.count("max_tokens", LEGACY_MAX_TOKENS, minimum=0)
    echo = call.field("echo", bool, False)
    seed = seed_of("completions", model, prompts, call.body.get("suffix"), call.body.get("seed"))
    choices = []
    for prompt_index, prompt in enumerate(prompts):
        for choice_index in range(n):
            answer = compose(seed_of(seed, prompt_index, choice_index), Format(), None, max_tokens)
            prefix = prompt if echo and isinstance(prompt, str) else ""
            choices.append((answer, f"{prefix}\n\n{answer.text}"))  # instruct models open with a blank line
    usage = Usage.compute(
        model,
        words_in(prompts) + sum(len(p) for p in prompts if isinstance(p, list)),
        sum(answer.words for answer, _ in choices),
        seed,
        call.knobs,
    )
    head = {
        "id": call.new_id("cmpl-"),
        "object": "text_completion",
        "created": call.created,
        "model": model,
        "system_fingerprint": system_fingerprint(model),
    }

    def choice(index: int, text: str, finish_reason: str | None) -> dict:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}

    if not call.field("stream", bool, False):
        body = [choice(i, text, answer.finish_reason) for i, (answer, text) in enumerate(choices)]
        return {**head, "choices": body, "usage": usage.chat()}
    include_usage = call.field("stream_options", dict, {}).get("include_usage")
    events = []
    for index, (answer, text) in enumerate(choices):
        pieces = split_pieces(text, call.knobs.chunks)
        for position, piece in enumerate(pieces):
            finish = answer.finish_reason if position == len(pieces) - 1 else None
            events.append({**head, "choices": [choice(index, piece, finish)]})
    if include_usage:
        events = [{**event, "usage": None} for event in events]
        events.append({**head, "choices": [], "usage": usage.chat()})
    return [*(Event(event) for event in events), Event(DONE)]


def _prompts(call: Call) -> list:
    """A string, a token array, or an array of either."""
    value = call.field("prompt", (str, list))
    if isinstance(value, str) or (value and all(isinstance(token, int) for token in value)):
        value = [value]
    if not value:
        raise invalid("Invalid 'prompt': empty array.", "prompt", "empty_array")
    for index, prompt in enumerate(value):
        if not isinstance(prompt, str | list):
            raise invalid(
                f"Invalid 'prompt[{index}]': expected a string or a token array.",
                f"prompt[{index}]",
                "invalid_type",
            )
    return value
