"""Request explorer: find calls by model, service, user, session, tag, status or text, and open any of them."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard
from llmtap.clickhouse import messages
from llmtap.grafana import aggregate, links, panels, sql, variables
from llmtap.grafana.board import Board

UID = "llmtap-explorer"

# The explorer narrows by everything the other dashboards do, plus a session id, the status and a text search.
FILTERS = (*sql.CALL_FILTERS, "session", "status", "search")


# The totals read the rollups while only their dimensions are filtered, and rollups count whole minutes.
_BY_MINUTE = " Counted by the minute: every minute that starts in the time range."


def _matching(measure: aggregate.Measure, alias: str) -> str:
    """One total over the matching calls, from the rollups while only their dimensions are filtered."""
    return aggregate.query([(measure, alias)], filters=FILTERS)


def dashboard() -> Dashboard:
    board = Board(
        UID,
        "LLM request explorer",
        "Search LLM calls and open one to read its prompt, response, attributes and trace.",
        [
            *variables.call_filters(),
            variables.text("session", "Session id"),
            variables.status(),
            variables.text("search", "Text in prompt or response"),
        ],
    )
    board.add(
        panels.big_number(
            "Matching calls",
            "Calls matching the filters." + _BY_MINUTE,
            _matching(aggregate.CALLS, "calls"),
            "short",
        ),
        8,
        3,
    )
    board.add(
        panels.big_number(
            "Failed",
            "Matching calls that failed." + _BY_MINUTE,
            _matching(aggregate.ERRORS, "failed"),
            "short",
            thresholds=((None, "green"), (1, "red")),
        ),
        8,
        3,
    )
    board.add(
        panels.big_number(
            "Tokens",
            "Input plus output tokens of the matching calls." + _BY_MINUTE,
            _matching(aggregate.TOKENS, "tokens"),
            "short",
        ),
        8,
        3,
    )
    board.add(
        panels.grid(
            "Calls",
            "The 500 most recent matching calls. Open a row (Time or TraceId) for the whole call or its trace.",
            f"""SELECT
  Timestamp AS Time,
  ServiceName AS Service,
  Model,
  if(IsError = 1, 'error', 'ok') AS Status,
  DurationMs AS Latency,
  InputTokens AS `Tokens in`,
  OutputTokens AS `Tokens out`,
  Cost,
  UserId AS User,
  SessionId AS Session,
  arrayStringConcat(Tags, ', ') AS `Call tags`,
  {messages.preview("InputMessages")} AS Prompt,
  {messages.preview("OutputMessages")} AS Response,
  TraceId,
  SpanId
FROM {sql.COSTED}
{sql.where(aggregate.newest(500, filters=FILTERS), filters=FILTERS)}
ORDER BY Timestamp DESC
LIMIT 500""",
            units={"Latency": "ms", "Tokens in": "short", "Tokens out": "short", "Cost": "currencyUSD"},
            links=links.call_links(),
        ),
        24,
        20,
    )
    return board.build()
