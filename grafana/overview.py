"""LLM overview: traffic, errors, latency, time to first chunk, tokens and cost, in total and by model/service."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.grafana import panels, sql, variables
from llmtap.grafana.board import Board

UID = "llmtap-overview"

_RPS = ("count() / $__interval_s", "calls_per_second")
_ERROR_RATE = (sql.error_ratio(), "error_rate")
_P95 = ("quantile(0.95)(DurationMs)", "p95_ms")
_PERCENTILES = (
    ("quantile(0.5)(DurationMs)", "p50"),
    ("quantile(0.95)(DurationMs)", "p95"),
    ("quantile(0.99)(DurationMs)", "p99"),
)
_COST_PER_HOUR = ("sum(Cost) * 3600 / $__interval_s", "usd_per_hour")
_BY = {"model": "Model", "service": "ServiceName"}


def _total(expression: str, alias: str, table: str = sql.CALLS) -> str:
    return f"SELECT {expression} AS {alias}\nFROM {table}\n{sql.where()}"


def _by(title: str, what: str, metric: tuple[str, str], unit: str, axis: str, **options: object) -> list:
    """The same metric split by model and by service: two panels side by side."""
    return [
        panels.time_series(
            f"{title} by {name}",
            f"{what} per {name}.",
            sql.time_series([metric], by=column, **options),  # type: ignore[arg-type]
            unit,
            axis_label=axis,
            series_label=column,
        )
        for name, column in _BY.items()
    ]


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM overview",
        "Every LLM call your applications make: traffic, errors, latency, tokens and cost.",
        variables.call_filters(),
    )
    board.section("Totals")
    for stat in (
        panels.big_number("Calls", "LLM calls in the time range.", _total("count()", "calls"), "short"),
        panels.big_number(
            "Error rate",
            "Share of calls that failed (span status Error).",
            _total(f"if(count() = 0, 0, {sql.error_ratio()})", "error_rate"),
            "percentunit",
            decimals=2,
            thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        panels.big_number(
            "p95 latency",
            "95th percentile of the call duration.",
            _total("quantile(0.95)(DurationMs)", "p95_ms"),
            "ms",
            thresholds=((None, "green"), (2000, "orange"), (5000, "red")),
        ),
        panels.big_number(
            "Input tokens", "Prompt tokens sent.", _total("sum(InputTokens)", "input_tokens"), "short"
        ),
        panels.big_number(
            "Output tokens",
            "Completion tokens received.",
            _total("sum(OutputTokens)", "output_tokens"),
            "short",
        ),
        panels.big_number(
            "Cost",
            "Spend at the prices in model_prices; calls of unpriced models count as nothing.",
            _total("sum(Cost)", "cost_usd", sql.COSTED),
            "currencyUSD",
            decimals=2,
        ),
    ):
        board.add(stat, 4, 4)

    board.section("Traffic and errors")
    for panel in _by("Calls per second", "Calls per second", _RPS, "reqps", "calls/s"):
        board.add(panel, 12, 8)
    for panel in _by("Error rate", "Share of failed calls", _ERROR_RATE, "percentunit", "failed calls"):
        board.add(panel, 12, 8)

    board.section("Latency")
    board.add(
        panels.time_series(
            "Latency percentiles",
            "p50, p95 and p99 of the call duration (whole call, including streaming).",
            sql.time_series(_PERCENTILES),
            "ms",
            axis_label="duration",
        ),
        12,
        8,
    )
    board.add(
        panels.time_series(
            "Time to first chunk (streams)",
            "p50, p95 and p99 of the time until the first streamed chunk arrived.",
            sql.time_series(
                [
                    (f"quantile({q})(TimeToFirstChunkMs)", name)
                    for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
                ],
                extra=("IsStream = 1", "TimeToFirstChunkMs IS NOT NULL"),
            ),
            "ms",
            axis_label="time to first chunk",
        ),
        12,
        8,
    )
    for panel in _by("p95 latency", "95th percentile of the call duration", _P95, "ms", "duration"):
        board.add(panel, 12, 8)

    board.section("Tokens and cost")
    board.add(
        panels.time_series(
            "Tokens per second",
            "Input (prompt) and output (completion) tokens per second.",
            sql.time_series(
                [
                    (sql.per_second("sum(InputTokens)"), "input"),
                    (sql.per_second("sum(OutputTokens)"), "output"),
                ]
            ),
            "short",
            axis_label="tokens/s",
        ),
        12,
        8,
    )
    board.add(
        panels.time_series(
            "Tokens per second by model",
            "Input plus output tokens per second, per model.",
            sql.time_series([(sql.per_second("sum(InputTokens + OutputTokens)"), "tokens")], by="Model"),
            "short",
            axis_label="tokens/s",
            series_label="Model",
            stacked=True,
        ),
        12,
        8,
    )
    for panel in _by(
        "Cost per hour",
        "Spend rate in USD per hour",
        _COST_PER_HOUR,
        "currencyUSD",
        "USD/h",
        table=sql.COSTED,
    ):
        board.add(panel, 12, 8)

    board.section("Answer quality")
    board.add(
        panels.time_series(
            "Uncertain answers by model",
            'Share of answers containing a phrase such as "I\'m not sure" (the list is in llmtap.grafana.sql).',
            sql.time_series(
                [(f"avg({sql.is_uncertain()})", "uncertain_share")],
                by="Model",
                extra=(sql.ANSWER_OPERATIONS,),
            ),
            "percentunit",
            axis_label="uncertain answers",
            series_label="Model",
        ),
        24,
        8,
    )
    return board.build()
