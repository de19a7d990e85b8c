"""Turn a panel's SQL into the SQL ClickHouse receives, the way Grafana and the ClickHouse plugin do it.

A dashboard query goes through three steps before it reaches ClickHouse, and this module mirrors each one so the
build and the tests can run every panel's SQL on a real ClickHouse without a Grafana server:

1. `$__conditionalAll(condition, $var)` — the plugin's frontend, `Datasource.applyConditionalAll` and
   `getMacroArgs` in src/data/CHDatasource.ts (grafana/clickhouse-datasource).
2. Template variables `$var`, `${var}`, `${var:format}`, `[[var]]` — Grafana's interpolator (`VARIABLE_REGEX` and
   `formatRegistry` in grafana/scenes, packages/scenes/src/variables/interpolation/), with the plugin's own
   `format()` for variables written without a format (CHDatasource.ts: lists become `'a','b'`).
3. Backend macros such as `$__timeFilter(col)` — `sqlutil.Interpolate` and `getMacroMatches` in
   grafana-plugin-sdk-go (data/sqlutil/macros.go) calling the functions of the plugin's pkg/macros/macros.go.

Alert rules skip steps 1 and 2: Grafana evaluates them on the server, where no dashboard variables exist.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

ALL = "$__all"  # the value Grafana gives a variable whose "All" option is selected


class InterpolationError(ValueError):
    """The SQL cannot be expanded the way Grafana would (bad macro, undefined variable, …)."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's selection: `value` is a string, or a list for multi-value variables.

    `options` are the values "All" stands for, as Grafana substitutes them when no custom all value is set.
    """

    name: str
    value: str | list[str]
    options: list[str] = field(default_factory=list)

    def is_all(self) -> bool:
        return self.value == ALL or (isinstance(self.value, list) and self.value[:1] == [ALL])

    def resolved(self) -> str | list[str]:
        """The value a template substitutes: the selected value(s), or every option for "All"."""
        return list(self.options) if self.is_all() else self.value


@dataclass(frozen=True)
class QueryContext:
    """What Grafana sends with a query: the time range and the interval chosen for it."""

    time_from: datetime
    time_to: datetime
    interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.time_from.tzinfo is None or self.time_to.tzinfo is None:
            raise ValueError("QueryContext times must be timezone-aware")


# --- 1. $__conditionalAll (plugin frontend) --------------------------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_MACRO_ARG_TOKENS = re.compile(r"\(|\)|,")


def _macro_args(sql: str, open_paren_index: int) -> list[str]:
    """Arguments of a macro call whose "(" is at `open_paren_index`; [] when the parentheses never close.

    Mirrors CHDatasource.getMacroArgs: a comma splits only at the macro's own bracket depth.
    """
    text = sql[open_paren_index:]
    args: list[str] = []
    depth = 0
    last_end = 1
    for token in _MACRO_ARG_TOKENS.finditer(text):
        if token.group() == "(":
            depth += 1
        elif token.group() == ")":
            depth -= 1
        if token.group() == "," and depth == 1:
            args.append(text[last_end : token.end() - 1])
            last_end = token.end()
        if depth == 0:
            args.append(text[last_end : token.end() - 1])
            return args
    return []


def _js_replace_first(text: str, pattern: str, replacement: str) -> str:
    """JavaScript's `text.replace(pattern, replacement)` for a string pattern, including the `$$`, `$&`, `` $` ``
    and `$'` substitutions a replacement string may contain (which would silently mangle SQL in Grafana)."""
    index = text.find(pattern)
    if index < 0:
        return text
    before, after = text[:index], text[index + len(pattern) :]
    specials = {"$": "$", "&": pattern, "`": before, "'": after}
    expanded = re.sub(r"\$([$&`'])", lambda m: specials[m.group(1)], replacement)
    return before + expanded + after


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    """Replace each `$__conditionalAll(condition, $var)` by `condition`, or by `1=1` when `$var` is All or empty."""
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        params = _macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(params) != 2:
            raise InterpolationError(
                f"$__conditionalAll needs 2 arguments, got {len(params)}: {sql[index:][:80]!r}"
            )
        reference = params[1].strip()
        variable = variables.get(reference[1:])  # the plugin strips the leading "$": "${var}" does not work
        if variable is None:
            raise InterpolationError(
                f"$__conditionalAll second argument {reference!r} is not a defined $variable"
            )
        phrase = params[0]
        if variable.is_all() or _js_to_string(variable.value) == "":
            phrase = "1=1"
        expanded = _js_replace_first(sql, f"{_CONDITIONAL_ALL}{params[0]},{params[1]})", phrase)
        if expanded == sql:
            raise InterpolationError(f"$__conditionalAll could not be replaced in {sql[index:][:80]!r}")
        sql = expanded
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


def _js_to_string(value: str | list[str]) -> str:
    """`value.toString()` in JavaScript: arrays join with commas."""
    return ",".join(value) if isinstance(value, list) else value


# --- 2. template variables (Grafana) ----------------------------------------------------------------------------

# grafana/scenes: packages/scenes/src/variables/constants.ts, VARIABLE_REGEX
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _single_quote(value: str | list[str]) -> str:
    """formatRegistry `singlequote`: each value in single quotes, inner quotes escaped with a backslash."""
    values = value if isinstance(value, list) else [value]
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _plugin_format(value: str | list[str]) -> str:
    """The ClickHouse plugin's `format()` for variables used without a format: lists become `'a','b'`, unescaped."""
    return "'" + "','".join(value) + "'" if isinstance(value, list) else value


def _percent_encode(value: str | list[str]) -> str:
    """formatRegistry `percentencode` (encodeURIComponentStrict): only letters, digits and `-_.~` stay as they
    are, so the result can sit in a SQL string literal whatever the user typed."""
    text = "{" + ",".join(value) + "}" if isinstance(value, list) else value
    return quote(text, safe="-_.~")


_FORMATS: dict[str, Callable[[str | list[str]], str]] = {
    "singlequote": _single_quote,
    "percentencode": _percent_encode,
    "raw": lambda v: _js_to_string(v),
    "csv": lambda v: _js_to_string(v),
    "pipe": lambda v: "|".join(v) if isinstance(v, list) else v,
}


def replace_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Substitute dashboard variables; references to unknown names stay as written, as in Grafana."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)
        if match.group(5):
            raise InterpolationError(f"field paths are not supported: {match.group(0)}")
        fmt = match.group(3) or match.group(6)
        if fmt is None:
            return _plugin_format(variable.resolved())
        if fmt not in _FORMATS:
            raise InterpolationError(f"unsupported variable format {fmt!r} in {match.group(0)}")
        return _FORMATS[fmt](variable.resolved())

    return _VARIABLE.sub(substitute, sql)


# --- 3. backend macros (plugin + grafana-plugin-sdk-go sqlutil) -------------------------------------------------


def _date_time(moment: datetime) -> str:
    return f"toDateTime({math.floor(moment.timestamp())})"  # macros.go timeToDateTime: t.Unix()


def _date_time64(moment: datetime) -> str:
    return f"fromUnixTimestamp64Milli({math.floor(moment.timestamp() * 1000)})"  # timeToDateTime64: t.UnixMilli()


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(timezone.utc):%Y-%m-%d}')"  # timeToDate


def _interval_seconds(ctx: QueryContext) -> int:
    return int(max(ctx.interval_seconds, 1))  # math.Max(query.Interval.Seconds(), 1), then int()


def _expect(args: Sequence[str], count: int, name: str) -> None:
    if len(args) != count:
        raise InterpolationError(f"$__{name}: expected {count} argument(s), received {len(args)}")


def _between(column: str, low: str, high: str) -> str:
    return f"{column} >= {low} AND {column} <= {high}"


def _time_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 1, "timeFilter")
    return _between(args[0], _date_time(ctx.time_from), _date_time(ctx.time_to))


def _time_filter_ms(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 1, "timeFilter_ms")
    return _between(args[0], _date_time64(ctx.time_from), _date_time64(ctx.time_to))


def _date_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 1, "dateFilter")
    return _between(args[0], _date(ctx.time_from), _date(ctx.time_to))


def _date_time_filter(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 2, "dateTimeFilter")
    dates = _between(args[0], _date(ctx.time_from), _date(ctx.time_to))
    times = _between(args[1], _date_time(ctx.time_from), _date_time(ctx.time_to))
    return f"({dates}) AND ({times})"


def _time_interval(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 1, "timeInterval")
    return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {_interval_seconds(ctx)} second)"


def _time_interval_ms(ctx: QueryContext, args: Sequence[str]) -> str:
    _expect(args, 1, "timeInterval_ms")
    milliseconds = int(max(ctx.interval_seconds * 1000, 1))
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {milliseconds} millisecond)"


MacroFunc = Callable[[QueryContext, Sequence[str]], str]

# pkg/macros/macros.go `Macros`; sqlutil's own defaults (timeFrom, timeTo, timeGroup, table, column) are left out
# on purpose: they produce RFC 3339 strings or need a builder table, so a panel using them is reported, not run.
MACROS: dict[str, MacroFunc] = {
    "fromTime": lambda ctx, args: _date_time(ctx.time_from),
    "toTime": lambda ctx, args: _date_time(ctx.time_to),
    "fromTime_ms": lambda ctx, args: _date_time64(ctx.time_from),
    "toTime_ms": lambda ctx, args: _date_time64(ctx.time_to),
    "timeFilter": _time_filter,
    "timeFilter_ms": _time_filter_ms,
    "dateFilter": _date_filter,
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda ctx, args: str(_interval_seconds(ctx)),
}

_ANY_MACRO = re.compile(r"\$__(\w+)")


def _split_args(text: str) -> list[str]:
    """Top-level comma split; nested parentheses stay inside one argument (sqlutil parseArgs)."""
    args, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            args.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    args.append("".join(current))
    return [arg.strip() for arg in args]


def _macro_calls(sql: str, name: str) -> list[tuple[str, list[str]]]:
    """(matched text, arguments) for each `$__name` / `$__name(args)` in `sql` (sqlutil getMacroMatches): arguments
    exist only when "(" follows the name directly, and an unclosed parenthesis is an error."""
    calls = []
    for match in re.finditer(rf"\$__{name}\b", sql):
        end = match.end()
        if end < len(sql) and sql[end] == "(":
            depth = 0
            for index in range(end, len(sql)):
                depth += {"(": 1, ")": -1}.get(sql[index], 0)
                if depth == 0:
                    calls.append((sql[match.start() : index + 1], _split_args(sql[end + 1 : index])))
                    break
            else:
                raise InterpolationError(f"$__{name}: missing closing parenthesis")
        else:
            calls.append((match.group(0), []))
    return calls


def expand_macros(sql: str, ctx: QueryContext) -> str:
    """Apply the backend macros; any other `$__name` left in the SQL is an error."""
    for name, macro in MACROS.items():
        for text, args in _macro_calls(sql, name):
            sql = sql.replace(text, macro(ctx, args))
    leftover = _ANY_MACRO.search(sql)
    if leftover:
        raise InterpolationError(f"unsupported macro {leftover.group(0)}")
    return sql


# --- the whole path ---------------------------------------------------------------------------------------------

_LEFTOVER_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*|\[\[\w+")


def expand_dashboard_sql(sql: str, variables: Sequence[Variable], ctx: QueryContext) -> str:
    """A dashboard target's SQL as ClickHouse receives it, for the given variable selections."""
    by_name = {variable.name: variable for variable in variables}
    sql = replace_variables(apply_conditional_all(sql, by_name), by_name)
    leftover = _LEFTOVER_VARIABLE.search(_ANY_MACRO.sub("", sql))
    if leftover:
        raise InterpolationError(f"undefined variable {leftover.group(0)}")
    return expand_macros(sql, ctx)


def expand_alert_sql(sql: str, ctx: QueryContext) -> str:
    """An alert query's SQL as ClickHouse receives it: only backend macros exist on the server."""
    if _LEFTOVER_VARIABLE.search(_ANY_MACRO.sub("", sql)) or _CONDITIONAL_ALL in sql:
        raise InterpolationError("alert queries cannot use dashboard variables or $__conditionalAll")
    return expand_macros(sql, ctx)
