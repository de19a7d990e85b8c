"""SQL expressions over the GenAI message columns (semconv `gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`: JSON arrays of `{role, parts: [{type, content}]}`), shared by the query layer
(`llmtap logs`) and the dashboards, so a prompt reads the same in both."""

from __future__ import annotations


def message_text(messages: str, fallback: str | None = None) -> str:
    """The text of a GenAI messages JSON array (`[{role, parts: [{type, content}]}]`; bare parts, as in system
    instructions, work too). When it holds no text parts the `fallback` (by default the JSON itself) is shown, so
    truncated or unusual content is never hidden from the reader."""
    parts = (
        f"arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'),"
        f" arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')),"
        f" [JSONExtractString(m, 'content')]), JSONExtractArrayRaw({messages}))))"
    )
    return f"if(empty({parts}), {fallback or messages}, arrayStringConcat({parts}, '\\n'))"


def preview(column: str, length: int | str = 160) -> str:
    """A one-line preview of the last message of a messages column (the latest turn), for tables; `length` in
    characters, a number or a bound parameter."""
    last = f"concat('[', arrayElement(JSONExtractArrayRaw({column}), -1), ']')"
    return f"leftUTF8(trimBoth(replaceRegexpAll({message_text(last, column)}, '\\\\s+', ' ')), {length})"
