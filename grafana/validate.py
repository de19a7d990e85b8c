"""Run every dashboard, variable and alert query against ClickHouse and check the columns fit what shows them.

Each query is first expanded the way Grafana and the ClickHouse plugin expand it (`interpolate`), for two
selections of the dashboard variables: everything on "All" (the macros collapse to `1=1`) and a specific value
in every variable (the filter conditions themselves run). `DESCRIBE (query)` then gives the result's column
types without needing data, so a schema with no rows still proves that every query parses, names existing
columns and returns the shape its panel needs: time first for time series, a number for stats and alerts, the
trace columns for the trace view.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from llmtap.grafana.interpolate import (
    ALL,
    InterpolationError,
    QueryContext,
    Variable,
    expand_alert_sql,
    expand_dashboard_sql,
)
from llmtap.grafana.query import Format

# Columns Grafana's trace view needs (the data frame of the plugin's trace format).
TRACE_COLUMNS = ("traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration")

# A specific value for each variable the dashboards define, so the filter conditions run too.
SPECIFIC_VALUES: dict[str, str | list[str]] = {
    "project": ["shop"],
    "service": ["checkout", "it's-quoted"],
    "model": ["gpt-4o-mini"],
    "user": ["user-1"],
    "tag": ["beta"],
    "session": "session-1",
    "status": ["1"],
    "search": "refund",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
}


@dataclass(frozen=True)
class Query:
    """A query to check: where it comes from, its SQL as written, and the shape its consumer needs."""

    source: str
    sql: str
    shape: str  # "time_series", "numbers", "rows", "trace", "alert" or "variable"
    window_seconds: int = 0  # alert rules: how far back the query looks
    units: frozenset[str] = frozenset()  # tables: the columns given a unit


@dataclass(frozen=True)
class Problem:
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def _shape(panel_type: str, fmt: int) -> str:
    if fmt == Format.TRACE:
        return "trace"
    if fmt == Format.TIME_SERIES:
        return "time_series"
    return "rows" if panel_type == "table" else "numbers"


def dashboard_queries(document: Mapping[str, Any]) -> list[Query]:
    """Every SQL target of a dashboard's panels, and every query variable."""
    uid = document["uid"]
    found = []
    for variable in document.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            found.append(Query(f"{uid} / variable {variable['name']}", _variable_sql(variable), "variable"))
    for panel in document.get("panels", []):
        units = frozenset(column_overrides(panel, "unit"))
        for target in panel.get("targets", []):
            shape = _shape(panel["type"], target.get("format", Format.TABLE))
            found.append(Query(f"{uid} / {panel['title']}", target["rawSql"], shape, units=units))
    return found


def column_overrides(panel: Mapping[str, Any], property_id: str) -> dict[str, Any]:
    """Column name -> the value a by-name field override sets for `property_id` ("unit", "links", …)."""
    found = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        for prop in override["properties"]:
            if prop["id"] == property_id and override["matcher"]["id"] == "byName":
                found[override["matcher"]["options"]] = prop["value"]
    return found


def _variable_sql(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return query if isinstance(query, str) else query["rawSql"]


def alert_queries(document: Mapping[str, Any]) -> list[Query]:
    """The ClickHouse query (refId A) of every rule in an alerting provisioning document."""
    found = []
    for group in document.get("groups", []):
        for rule in group["rules"]:
            for data in rule["data"]:
                if data.get("datasourceUid") != "__expr__":
                    window = int(data["relativeTimeRange"]["from"])
                    found.append(Query(f"alert {rule['uid']}", data["model"]["rawSql"], "alert", window))
    return found


_MULTI = {"project", "service", "model", "user", "tag", "status"}


def selections(document: Mapping[str, Any]) -> dict[str, list[Variable]]:
    """The variable selections every dashboard query is checked with: everything, a value of every variable,
    and one tag alone (the by-value rollup's branch, see aggregate.py)."""
    names = [
        v["name"] for v in document.get("templating", {}).get("list", []) if v.get("type") != "datasource"
    ]
    everything = [Variable(name, ALL if name in _MULTI else "", options=["a", "b"]) for name in names]
    specific = [Variable(name, SPECIFIC_VALUES[name]) for name in names]
    one_tag = [Variable(v.name, SPECIFIC_VALUES["tag"]) if v.name == "tag" else v for v in everything]
    return {"all": everything, "specific": specific, "one tag": one_tag}


def expansions(query: Query, document: Mapping[str, Any] | None, now: datetime) -> Iterator[tuple[str, str]]:
    """(selection name, SQL as ClickHouse receives it) for each way the query is checked."""
    if query.shape == "alert":
        ctx = QueryContext(now - timedelta(seconds=query.window_seconds), now, interval_seconds=1)
        yield "alert", expand_alert_sql(query.sql, ctx)
        return
    assert document is not None
    ctx = QueryContext(now - timedelta(hours=6), now, interval_seconds=60)
    for name, variables in selections(document).items():
        yield name, expand_dashboard_sql(query.sql, variables, ctx)


_NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*)\)?$")
_TIME = re.compile(r"^(Nullable\()?DateTime(64)?(\(.*\))?\)?$")
_STRING = re.compile(r"^(LowCardinality\()?(Nullable\()?String\)?\)?$")


def is_numeric(column_type: str) -> bool:
    return bool(_NUMERIC.match(column_type))


def is_time(column_type: str) -> bool:
    return bool(_TIME.match(column_type))


def is_string(column_type: str) -> bool:
    return bool(_STRING.match(column_type))


def shape_problems(
    shape: str, columns: Sequence[tuple[str, str]], units: frozenset[str] = frozenset()
) -> list[str]:
    """What is wrong with result columns (name, ClickHouse type) for a consumer of `shape`; `units` are the
    table columns that have a unit."""
    types = [column_type for _, column_type in columns]
    numeric = [name for name, column_type in columns if is_numeric(column_type)]
    if not columns:
        return ["returns no columns"]
    if shape == "time_series":
        problems = [] if is_time(types[0]) else [f"first column is {types[0]}, not a time"]
        if not numeric:
            problems.append("has no numeric value column")
        others = [f"{n} ({t})" for n, t in columns[1:] if not (is_numeric(t) or is_string(t))]
        return problems + [f"column {other} is neither a value nor a label" for other in others]
    if shape == "numbers":
        return [] if numeric else ["has no numeric column to show"]
    if shape == "trace":
        missing = [name for name in TRACE_COLUMNS if name not in dict(columns)]
        return [f"missing trace column(s) {', '.join(missing)}"] if missing else []
    if shape == "alert":
        labels = [n for n, t in columns if not is_numeric(t)]
        problems = [] if len(numeric) == 1 else [f"needs exactly one numeric column, has {numeric}"]
        bad = [n for n in labels if not is_string(dict(columns)[n])]
        return problems + ([f"label column(s) {bad} are not strings"] if bad else [])
    if shape == "variable":
        return (
            [] if len(columns) in (1, 2) else [f"a variable query returns 1 or 2 columns, not {len(columns)}"]
        )
    # tables: a table-wide unit would also reformat numeric-looking strings, so each number column needs its own
    without = [name for name in numeric if name not in units]
    return [f"numeric column(s) without a unit: {', '.join(without)}"] if without else []


def describe(client: Any, sql: str) -> list[tuple[str, str]]:
    """(name, type) of the columns `sql` returns, without running it over the data."""
    return [(row[0], row[1]) for row in client.query(f"DESCRIBE TABLE ({sql})").result_rows]


def check(
    client: Any,
    dashboards: Iterable[Mapping[str, Any]],
    alerting: Mapping[str, Any],
    now: datetime | None = None,
) -> list[Problem]:
    """Every problem found in the dashboards' and alert rules' queries on `client` (empty when all is well)."""
    now = now or datetime.now(timezone.utc)
    work: list[tuple[Query, Mapping[str, Any] | None]] = []
    for document in dashboards:
        work += [(query, document) for query in dashboard_queries(document)]
    work += [(query, None) for query in alert_queries(alerting)]
    problems = []
    for query, document in work:
        try:
            for selection, sql in expansions(query, document, now):
                try:
                    columns = describe(client, sql)
                except Exception as exc:  # ClickHouse's own message says what is wrong
                    problems.append(Problem(f"{query.source} [{selection}]", _first_line(exc)))
                    continue
                found = shape_problems(query.shape, columns, query.units)
                problems += [Problem(f"{query.source} [{selection}]", message) for message in found]
        except InterpolationError as exc:
            problems.append(Problem(query.source, str(exc)))
    return problems


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__
