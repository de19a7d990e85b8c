"""Failures: errors over time by error.type, model and service, and the latest failed calls with their messages."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.grafana import aggregate, links, panels, sql, variables
from llmtap.grafana.aggregate import Measure
from llmtap.grafana.board import Board
from llmtap.grafana.overview import error_rate_stat

UID = "llmtap-failures"

FAILED = "IsError = 1"
_ERROR_TYPE = "if(ErrorType = '', 'unknown', ErrorType)"


def _failed(measure: Measure, alias: str) -> str:
    return aggregate.query([(measure, alias)], extra=[FAILED])


def _same(expression: str) -> Measure:
    """An aggregate the rollup's dimension columns answer the same way."""
    return Measure(expression, expression)


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM failures",
        "Failed LLM calls: which errors, where, and the latest ones with their messages.",
        variables.call_filters(),
    )
    board.section("Totals")
    red = ((None, "green"), (1, "red"))
    board.add(
        panels.big_number(
            "Failed calls",
            "Calls that ended in an error.",
            _failed(aggregate.CALLS, "failed"),
            "short",
            thresholds=red,
        ),
        6,
        4,
    )
    board.add(error_rate_stat(), 6, 4)
    board.add(
        panels.big_number(
            "Distinct error types",
            "Distinct error.type values among failures.",
            _failed(_same(f"uniqExact({_ERROR_TYPE})"), "error_types"),
            "short",
        ),
        6,
        4,
    )
    board.add(
        panels.big_number(
            "Services affected",
            "Services with at least one failed call.",
            _failed(_same("uniqExact(ServiceName)"), "services"),
            "short",
        ),
        6,
        4,
    )

    board.section("Errors over time")
    for title, by, label in (
        ("Errors by error type", f"{_ERROR_TYPE} AS ErrorType", "ErrorType"),
        ("Errors by model", "Model", "Model"),
        ("Errors by service", "ServiceName", "ServiceName"),
    ):
        board.add(
            panels.time_series(
                title,
                f"Failed calls per second, stacked by {label}.",
                aggregate.query(
                    [(aggregate.rate(aggregate.CALLS), "errors_per_second")],
                    over_time=True,
                    by=[by],
                    extra=[FAILED],
                ),
                "reqps",
                axis_label="errors/s",
                series_label=label,
                bars=True,
                stacked=True,
            ),
            8,
            8,
        )

    board.section("Breakdown")
    board.add(
        panels.grid(
            "Error types",
            "Each error.type with its count, share of all failures, where it happens and an example message.",
            f"""SELECT
  {_ERROR_TYPE} AS `Error type`,
  count() AS Failures,
  count() / sum(count()) OVER () AS Share,
  arrayStringConcat(groupUniqArray(10)(ServiceName), ', ') AS Services,
  arrayStringConcat(groupUniqArray(10)(Model), ', ') AS Models,
  max(Timestamp) AS `Last seen`,
  argMax(StatusMessage, Timestamp) AS `Latest message`
FROM {sql.CALLS}
{sql.where(FAILED)}
GROUP BY `Error type`
ORDER BY Failures DESC
LIMIT 100""",
            units={"Failures": "short", "Share": "percentunit"},
        ),
        24,
        8,
    )

    board.section("Latest failures")
    board.add(
        panels.grid(
            "Latest failed calls",
            "The 200 most recent failures. Open a row for the whole call or its trace.",
            f"""SELECT
  Timestamp AS Time,
  ServiceName AS Service,
  Model,
  {_ERROR_TYPE} AS `Error type`,
  StatusMessage AS Message,
  UserId AS User,
  DurationMs AS Latency,
  TraceId,
  SpanId
FROM {sql.CALLS}
{sql.where(FAILED, aggregate.newest(200, FAILED))}
ORDER BY Timestamp DESC
LIMIT 200""",
            units={"Latency": "ms"},
            links=links.call_links(),
            wrap_text=True,
        ),
        24,
        12,
    )
    return board.build()
