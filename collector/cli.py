"""`llmtap serve`."""

from llmtap.cli import not_built_yet

serve = not_built_yet("serve", "Run the embedded collector: OTLP in, ClickHouse rows out.")
