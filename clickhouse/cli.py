"""`llmtap logs`, `stats`, `export` and `db`."""

from llmtap.cli import not_built_yet

logs = not_built_yet("logs", "Show recent LLM calls, filter them, follow new ones.")
stats = not_built_yet("stats", "Aggregate calls, errors, latency, tokens and cost.")
export = not_built_yet("export", "Export calls to JSONL, CSV or Parquet.")
db = not_built_yet("db", "Migrations, status and retention of the ClickHouse store.")
