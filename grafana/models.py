"""Models: one row per model (calls, latency spread, tokens, cost, error rate) and how their latencies compare."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.grafana import panels, sql, variables
from llmtap.grafana.board import Board
from llmtap.grafana.panels import Link

UID = "llmtap-models"
EXPLORER_UID = "llmtap-explorer"

_LATENCY_COLUMNS = ("Min latency", "Avg latency", "p90 latency", "p95 latency", "Max latency")


def _per_model(expression: str, alias: str, table: str = sql.CALLS) -> str:
    return (
        f"SELECT Model, {expression} AS {alias}\nFROM {table}\n{sql.where()}\n"
        f"GROUP BY Model\nHAVING {alias} > 0\nORDER BY {alias} DESC\nLIMIT 20"
    )


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM models",
        "Compare models: volume, latency spread, tokens, cost and errors.",
        variables.call_filters(),
    )
    explore_model = Link(
        "Show this model's calls",
        f"/d/{EXPLORER_UID}/llm-request-explorer?var-model=${{__data.fields.Model}}"
        "&${datasource:queryparam}&${project:queryparam}&${service:queryparam}&${__url_time_range}",
    )
    board.section("Per model")
    board.add(
        panels.grid(
            "Models",
            "One row per model. Latencies are whole-call durations; cost uses model_prices (empty when unpriced).",
            f"""SELECT
  Model,
  arrayStringConcat(groupUniqArray(Provider), ', ') AS Provider,
  count() AS Calls,
  {sql.error_ratio()} AS `Error rate`,
  min(DurationMs) AS `Min latency`,
  avg(DurationMs) AS `Avg latency`,
  quantile(0.9)(DurationMs) AS `p90 latency`,
  quantile(0.95)(DurationMs) AS `p95 latency`,
  max(DurationMs) AS `Max latency`,
  sum(InputTokens) AS `Input tokens`,
  sum(OutputTokens) AS `Output tokens`,
  sum(Cost) AS Cost
FROM {sql.COSTED}
{sql.where()}
GROUP BY Model
ORDER BY Calls DESC""",
            units={
                "Calls": "short",
                "Error rate": "percentunit",
                **{column: "ms" for column in _LATENCY_COLUMNS},
                "Input tokens": "short",
                "Output tokens": "short",
                "Cost": "currencyUSD",
            },
            links={"Model": [explore_model]},
        ),
        24,
        9,
    )

    board.section("Latency")
    board.add(
        panels.distribution(
            "Latency distribution",
            "Histogram of the durations of the latest 10,000 calls of the selected models.",
            f"SELECT DurationMs AS Latency\nFROM {sql.CALLS}\n{sql.where()}\nORDER BY Timestamp DESC\nLIMIT 10000",
            "ms",
            axis_label="calls",
        ),
        12,
        9,
    )
    board.add(
        panels.time_series(
            "p95 latency by model",
            "95th percentile of the call duration, per model.",
            sql.time_series([("quantile(0.95)(DurationMs)", "p95_ms")], by="Model"),
            "ms",
            axis_label="duration",
            series_label="Model",
        ),
        12,
        9,
    )

    board.section("Volume and cost")
    board.add(
        panels.bars("Calls by model", "Calls per model.", _per_model("count()", "calls"), "short"), 8, 8
    )
    board.add(
        panels.bars(
            "Tokens by model",
            "Input plus output tokens per model.",
            _per_model("sum(InputTokens + OutputTokens)", "tokens"),
            "short",
        ),
        8,
        8,
    )
    board.add(
        panels.bars(
            "Cost by model",
            "Spend per model (priced models only).",
            _per_model("sum(Cost)", "cost", sql.COSTED),
            "currencyUSD",
        ),
        8,
        8,
    )
    return board.build()
