"""LLM overview: traffic, errors, latency, time to first chunk, tokens and cost, in total and by model/service."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.grafana import aggregate, panels, sql, variables
from llmtap.grafana.aggregate import Measure
from llmtap.grafana.board import Board

UID = "llmtap-overview"

_BY = {"model": "Model", "service": "ServiceName"}
_PERCENTILES = (0.5, 0.95, 0.99)


def _by(
    title: str, what: str, measure: Measure, alias: str, unit: str, axis: str, *, costed: bool = False
) -> list:
    """The same measure over time, split by model and by service: two panels side by side."""
    return [
        panels.time_series(
            f"{title} by {name}",
            f"{what} per {name}." + (f" {aggregate.DIGEST_BUCKET_NOTE}" if measure.digest else ""),
            aggregate.query([(measure, alias)], over_time=True, by=[column], costed=costed),
            unit,
            axis_label=axis,
            series_label=column,
        )
        for name, column in _BY.items()
    ]


def _percentiles(measure: Callable[[float], Measure]) -> list[tuple[Measure, str]]:
    return [(measure(q), f"p{round(q * 100)}") for q in _PERCENTILES]


def error_rate_stat() -> stat.Panel:
    """The share of failed calls, amber above 1 % (the alert threshold) and red above 5 %."""
    return panels.big_number(
        "Error rate",
        "Share of calls that failed (span status Error).",
        aggregate.query([(aggregate.ERROR_RATIO, "error_rate")]),
        "percentunit",
        decimals=2,
        thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
    )


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM overview",
        "Every LLM call your applications make: traffic, errors, latency, tokens and cost.",
        variables.call_filters(),
    )
    board.section("Totals")
    for total in (
        panels.big_number(
            "Calls", "LLM calls in the time range.", aggregate.query([(aggregate.CALLS, "calls")]), "short"
        ),
        error_rate_stat(),
        panels.big_number(
            "p95 latency",
            "95th percentile of the call duration.",
            aggregate.query([(aggregate.latency(0.95), "p95_ms")]),
            "ms",
            thresholds=((None, "green"), (2000, "orange"), (5000, "red")),
        ),
        panels.big_number(
            "Input tokens",
            "Prompt tokens sent.",
            aggregate.query([(aggregate.INPUT_TOKENS, "input_tokens")]),
            "short",
        ),
        panels.big_number(
            "Output tokens",
            "Completion tokens received.",
            aggregate.query([(aggregate.OUTPUT_TOKENS, "output_tokens")]),
            "short",
        ),
        panels.big_number(
            "Cost",
            "Spend at the prices in model_prices; calls of unpriced models count as nothing.",
            aggregate.query([(aggregate.COST, "cost_usd")], costed=True),
            "currencyUSD",
            decimals=2,
        ),
    ):
        board.add(total, 4, 4)

    board.section("Traffic and errors")
    for panel in _by("Calls per second", "Calls per second", aggregate.rate(aggregate.CALLS), "calls_per_second",
                     "reqps", "calls/s"):  # fmt: skip
        board.add(panel, 12, 8)
    for panel in _by("Error rate", "Share of failed calls", aggregate.ERROR_RATIO, "error_rate", "percentunit",
                     "failed calls"):  # fmt: skip
        board.add(panel, 12, 8)

    board.section("Latency")
    for title, description, measure, axis in (
        ("Latency percentiles", "the call duration (whole call, including streaming)", aggregate.latency, "duration"),
        ("Time to first chunk (streams)", "the time until the first streamed chunk arrived",
         aggregate.time_to_first_chunk, "time to first chunk"),
    ):  # fmt: skip
        board.add(
            panels.time_series(
                title,
                f"p50, p95 and p99 of {description}. {aggregate.DIGEST_BUCKET_NOTE}",
                aggregate.query(_percentiles(measure), over_time=True),
                "ms",
                axis_label=axis,
            ),
            12,
            8,
        )
    for panel in _by("p95 latency", "95th percentile of the call duration", aggregate.latency(0.95), "p95_ms",
                     "ms", "duration"):  # fmt: skip
        board.add(panel, 12, 8)

    board.section("Tokens and cost")
    board.add(
        panels.time_series(
            "Tokens per second",
            "Input (prompt) and output (completion) tokens per second.",
            aggregate.query(
                [
                    (aggregate.rate(aggregate.INPUT_TOKENS), "input"),
                    (aggregate.rate(aggregate.OUTPUT_TOKENS), "output"),
                ],
                over_time=True,
            ),
            "short",
            axis_label="tokens/s",
        ),
        12,
        8,
    )
    board.add(
        panels.time_series(
            "Cost per hour",
            "Spend rate in USD per hour, at the prices in model_prices.",
            aggregate.query(
                [(aggregate.per_hour(aggregate.COST), "usd_per_hour")], over_time=True, costed=True
            ),
            "currencyUSD",
            axis_label="USD/h",
        ),
        12,
        8,
    )
    tokens = _by("Tokens per second", "Input plus output tokens per second", aggregate.rate(aggregate.TOKENS),
                 "tokens", "short", "tokens/s")  # fmt: skip
    cost = _by("Cost per hour", "Spend rate in USD per hour", aggregate.per_hour(aggregate.COST), "usd_per_hour",
               "currencyUSD", "USD/h", costed=True)  # fmt: skip
    for by_model_or_service in zip(tokens, cost, strict=True):
        for panel in by_model_or_service:
            board.add(panel, 12, 8)

    board.section("Answer quality")
    board.add(
        panels.time_series(
            "Uncertain answers by model",
            'Share of answers containing a phrase such as "I\'m not sure" (the phrases are the rows of the '
            "llm_uncertain_phrases table).",
            aggregate.query(
                [(Measure(f"avg({sql.is_uncertain()})", "sum(Uncertain) / sum(Answers)"), "uncertain_share")],
                over_time=True,
                by=["Model"],
                rollups=aggregate.ANSWER_ROLLUPS,
                extra=[sql.ANSWER_OPERATIONS],
            ),
            "percentunit",
            axis_label="uncertain answers",
            series_label="Model",
        ),
        24,
        8,
    )
    return board.build()
