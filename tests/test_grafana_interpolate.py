"""The SQL expansion mirrors Grafana and the ClickHouse plugin: expected strings come from the plugin's Go macros
(pkg/macros/macros.go), grafana-plugin-sdk-go's sqlutil tests, CHDatasource.applyConditionalAll and Grafana's
formatRegistry."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from llmtap.grafana.interpolate import (
    ALL,
    InterpolationError,
    QueryContext,
    Variable,
    apply_conditional_all,
    expand_alert_sql,
    expand_dashboard_sql,
    expand_macros,
    replace_variables,
)

FROM = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)  # 1735787045.678
TO = datetime(2025, 1, 2, 9, 4, 5, tzinfo=timezone.utc)  # 1735808645
CTX = QueryContext(FROM, TO, interval_seconds=30)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(Timestamp)", "Timestamp >= toDateTime(1735787045) AND Timestamp <= toDateTime(1735808645)"),
        (
            "$__timeFilter_ms(t)",
            "t >= fromUnixTimestamp64Milli(1735787045678) AND t <= fromUnixTimestamp64Milli(1735808645000)",
        ),
        ("$__fromTime AND $__toTime", "toDateTime(1735787045) AND toDateTime(1735808645)"),
        ("$__fromTime_ms", "fromUnixTimestamp64Milli(1735787045678)"),
        ("$__dateFilter(d)", "d >= toDate('2025-01-02') AND d <= toDate('2025-01-02')"),
        (
            "$__dateTimeFilter(d, t)",
            "(d >= toDate('2025-01-02') AND d <= toDate('2025-01-02')) AND "
            "(t >= toDateTime(1735787045) AND t <= toDateTime(1735808645))",
        ),
        ("$__timeInterval(Timestamp)", "toStartOfInterval(toDateTime(Timestamp), INTERVAL 30 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30000 millisecond)"),
        ("count() / $__interval_s", "count() / 30"),
        # sqlutil: nested parentheses stay in one argument; the same call twice is replaced everywhere
        ("$__timeFilter(toDateTime(a, 'UTC'))", "toDateTime(a, 'UTC') >= toDateTime(1735787045) AND "
         "toDateTime(a, 'UTC') <= toDateTime(1735808645)"),
        ("($__interval_s)*($__interval_s)", "(30)*(30)"),
    ],
)  # fmt: skip
def test_backend_macros_expand_like_the_plugin(sql: str, expected: str) -> None:
    assert expand_macros(sql, CTX) == expected


def test_interval_is_at_least_one_second() -> None:
    ctx = QueryContext(FROM, TO, interval_seconds=0.2)
    assert expand_macros("$__interval_s $__timeInterval(t)", ctx) == (
        "1 toStartOfInterval(toDateTime(t), INTERVAL 1 second)"
    )


def test_arguments_only_when_the_parenthesis_follows_the_name() -> None:
    # grafana-plugin-sdk-go: "don't consume args after a space" (sqlds#82)
    assert expand_macros("$__fromTime (1)", CTX) == "toDateTime(1735787045) (1)"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("$__timeFilter(a", "missing closing parenthesis"),
        ("$__timeFilter(a, b)", "expected 1 argument"),
        ("$__timeFilter", "expected 1 argument"),
        ("$__timeGroup(t, '1m')", "unsupported macro $__timeGroup"),
    ],
)
def test_bad_macros_are_errors(sql: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message.replace("$", r"\$")):
        expand_macros(sql, CTX)


VARIABLES = {
    "model": Variable("model", ["gpt-4o", "it's"]),
    "service": Variable("service", ALL, options=["a", "b"]),
    "search": Variable("search", ""),
    "status": Variable("status", ["1"]),
}


def test_conditional_all_keeps_the_condition_for_a_selection() -> None:
    sql = "WHERE $__conditionalAll(Model IN (${model:singlequote}), $model) AND x"
    assert apply_conditional_all(sql, VARIABLES) == "WHERE Model IN (${model:singlequote}) AND x"


def test_conditional_all_drops_the_condition_for_all_and_for_empty() -> None:
    sql = "$__conditionalAll(ServiceName IN (${service:singlequote}), $service) AND $__conditionalAll(f(a, b) > 0, $search)"
    assert apply_conditional_all(sql, VARIABLES) == "1=1 AND 1=1"


def test_conditional_all_needs_a_plain_dollar_reference() -> None:
    with pytest.raises(InterpolationError, match="not a defined"):
        apply_conditional_all("$__conditionalAll(a = 1, ${model})", VARIABLES)
    with pytest.raises(InterpolationError, match="2 arguments"):
        apply_conditional_all("$__conditionalAll(a = 1)", VARIABLES)


def test_conditional_all_replacement_follows_javascript_replace() -> None:
    # String.prototype.replace turns "$$" into "$" in the replacement: Grafana would send the mangled SQL.
    sql = "$__conditionalAll(x = '$$', $model)"
    assert apply_conditional_all(sql, VARIABLES) == "x = '$'"


def test_variables_use_grafana_formats_and_the_plugins_default() -> None:
    sql = "${model:singlequote} | $model | [[status]] | ${service:singlequote} | ${search} | $unknown"
    assert (
        replace_variables(sql, VARIABLES)
        == "'gpt-4o','it\\'s' | 'gpt-4o','it's' | '1' | 'a','b' |  | $unknown"
    )


def test_dashboard_sql_runs_the_three_steps_in_grafanas_order() -> None:
    sql = (
        "SELECT count() FROM t WHERE $__timeFilter(Timestamp)"
        " AND $__conditionalAll(Model IN (${model:singlequote}), $model)"
        " AND $__conditionalAll(ServiceName IN (${service:singlequote}), $service)"
    )
    assert expand_dashboard_sql(sql, list(VARIABLES.values()), CTX) == (
        "SELECT count() FROM t WHERE Timestamp >= toDateTime(1735787045) AND Timestamp <= toDateTime(1735808645)"
        " AND Model IN ('gpt-4o','it\\'s') AND 1=1"
    )


def test_undefined_variables_are_reported() -> None:
    with pytest.raises(InterpolationError, match=r"undefined variable \$\{tenant"):
        expand_dashboard_sql("SELECT ${tenant:singlequote}", [], CTX)


def test_alert_sql_has_only_backend_macros() -> None:
    assert expand_alert_sql("SELECT 1 WHERE $__timeFilter(T)", CTX).endswith("T <= toDateTime(1735808645)")
    with pytest.raises(InterpolationError, match="dashboard variables"):
        expand_alert_sql("SELECT 1 WHERE m = $model", CTX)


def test_context_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        QueryContext(datetime(2025, 1, 1), TO)


def test_percent_encoding_leaves_nothing_that_can_end_a_string() -> None:
    hostile = Variable("search", "x\\' OR 1=1 -- é")
    assert (
        replace_variables("${search:percentencode}", {"search": hostile})
        == "x%5C%27%20OR%201%3D1%20--%20%C3%A9"
    )
    assert replace_variables("${v:percentencode}", {"v": Variable("v", ["a", "b,c"])}) == "%7Ba%2Cb%2Cc%7D"
