"""Models: one row per model (calls, latency spread, tokens, cost, error rate) and how their latencies compare."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.grafana import aggregate, panels, sql, variables
from llmtap.grafana.aggregate import Measure
from llmtap.grafana.board import Board
from llmtap.grafana.panels import Link

UID = "llmtap-models"
EXPLORER_UID = "llmtap-explorer"

_PROVIDERS = "arrayStringConcat(groupUniqArray(Provider), ', ')"
_COLUMNS = (
    (Measure(_PROVIDERS, _PROVIDERS), "Provider", None),
    (aggregate.CALLS, "`Number of calls`", "short"),  # not "Calls": that is a rollup column
    (aggregate.ERROR_RATIO, "`Error rate`", "percentunit"),
    (aggregate.MIN_LATENCY, "`Min latency`", "ms"),
    (aggregate.AVG_LATENCY, "`Avg latency`", "ms"),
    (aggregate.latency(0.9), "`p90 latency`", "ms"),
    (aggregate.latency(0.95), "`p95 latency`", "ms"),
    (aggregate.MAX_LATENCY, "`Max latency`", "ms"),
    (aggregate.INPUT_TOKENS, "`Input tokens`", "short"),
    (aggregate.OUTPUT_TOKENS, "`Output tokens`", "short"),
    (aggregate.COST, "Cost", "currencyUSD"),
)


def _per_model(measure: Measure, alias: str, *, costed: bool = False) -> str:
    return aggregate.query(
        [(measure, alias)],
        by=["Model"],
        costed=costed,
        having=f"{alias} > 0",
        order_by=f"{alias} DESC",
        limit=20,
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
            aggregate.query(
                [(measure, alias) for measure, alias, _ in _COLUMNS],
                by=["Model"],
                costed=True,
                order_by="`Number of calls` DESC",
            ),
            units={alias.strip("`"): unit for _, alias, unit in _COLUMNS if unit},
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
            f"SELECT DurationMs AS Latency\nFROM {sql.CALLS}\n{sql.where(aggregate.newest(10_000))}\n"
            "ORDER BY Timestamp DESC\nLIMIT 10000",
            "ms",
            axis_label="calls",
        ),
        12,
        9,
    )
    board.add(
        panels.time_series(
            "p95 latency by model",
            f"95th percentile of the call duration, per model. {aggregate.DIGEST_BUCKET_NOTE}",
            aggregate.query([(aggregate.latency(0.95), "p95_ms")], over_time=True, by=["Model"]),
            "ms",
            axis_label="duration",
            series_label="Model",
        ),
        12,
        9,
    )

    board.section("Volume and cost")
    board.add(
        panels.bars("Calls by model", "Calls per model.", _per_model(aggregate.CALLS, "calls"), "short"), 8, 8
    )
    board.add(
        panels.bars(
            "Tokens by model",
            "Input plus output tokens per model.",
            _per_model(aggregate.TOKENS, "tokens"),
            "short",
        ),
        8,
        8,
    )
    board.add(
        panels.bars(
            "Cost by model",
            "Spend per model (priced models only).",
            _per_model(aggregate.COST, "cost", costed=True),
            "currencyUSD",
        ),
        8,
        8,
    )
    return board.build()
