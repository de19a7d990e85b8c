"""The dashboards' template variables: which ClickHouse to read, and the project/service/model/user/tag filters.

Each filter variable lists the values seen in the dashboard's time range, narrowed by the variables before it
(a service list for the chosen projects, …), and allows several values plus "All"; `sql.where()` turns a
selection into `$__conditionalAll(...)` conditions.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import (
    VariableHide,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from llmtap.grafana import aggregate, sql
from llmtap.grafana.panels import DATASOURCE
from llmtap.grafana.query import DATASOURCE_NAME, DATASOURCE_UID, PLUGIN_ID

ALL = VariableOption(text="All", value="$__all")


def datasource() -> dash.DatasourceVariable:
    """Which ClickHouse datasource to read; defaults to the provisioned one."""
    return (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type(PLUGIN_ID)
        .current(VariableOption(text=DATASOURCE_NAME, value=DATASOURCE_UID))
    )


def _values(
    name: str, label: str, expression: str, narrowed_by: tuple[str, ...], *, rollup: bool = False
) -> dash.QueryVariable:
    """A multi-value filter listing the distinct non-empty `expression` values in the time range; project, service
    and model are dimensions of the hourly rollup, which lists them from far fewer rows (the hours that overlap
    the range, so a value seen in its first, partial hour is listed too)."""
    non_empty = "value != ''"
    if rollup:
        hours = "Hour >= toStartOfHour($__fromTime) AND Hour <= $__toTime"
        table, condition = (
            aggregate.CALL_ROLLUPS.hour,
            sql.where(non_empty, hours, filters=narrowed_by, time_column=None),
        )
    else:
        table, condition = sql.CALLS, sql.where(non_empty, filters=narrowed_by)
    query = f"SELECT DISTINCT {expression} AS value FROM {table}\n{condition}\nORDER BY value LIMIT 1000"
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        # Only values ClickHouse listed: a typed value would be quoted by `singlequote`, which a trailing
        # backslash defeats (free text goes through `sql.typed` instead).
        .allow_custom_value(False)
        .current(ALL)
    )


def project() -> dash.QueryVariable:
    return _values("project", "Project", "Project", (), rollup=True)


def service() -> dash.QueryVariable:
    return _values("service", "Service", "ServiceName", ("project",), rollup=True)


def model() -> dash.QueryVariable:
    return _values("model", "Model", "Model", ("project", "service"), rollup=True)


def user() -> dash.QueryVariable:
    return _values("user", "User", "UserId", ("project", "service"))


def tag() -> dash.QueryVariable:
    return _values("tag", "Tag", "arrayJoin(Tags)", ("project", "service"))


def call_filters() -> list:
    """The variables of every call dashboard, in the order `sql.CALL_FILTERS` applies them."""
    return [datasource(), project(), service(), model(), user(), tag()]


def text(name: str, label: str, *, hidden: bool = False) -> dash.TextBoxVariable:
    """A free-text variable (empty = no filter)."""
    variable = dash.TextBoxVariable(name).label(label).current(VariableOption(text="", value=""))
    return variable.hide(VariableHide.HIDE_VARIABLE) if hidden else variable


def status() -> dash.CustomVariable:
    """Successful or failed calls (values are `IsError`)."""
    return (
        dash.CustomVariable("status")
        .label("Status")
        .values("ok : 0,error : 1")
        .multi(False)
        .include_all(True)
        .current(ALL)
    )
