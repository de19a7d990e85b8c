"""Panel factories: each returns an SDK panel builder wired to the `${datasource}` variable, with one ClickHouse
SQL target in the format its visualisation needs and a unit on every value it shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, common, histogram, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import DynamicConfigValue, Threshold, ThresholdsMode
from llmtap.grafana.query import SQL, Format, datasource_ref

DATASOURCE = datasource_ref("${datasource}")


@dataclass(frozen=True)
class Link:
    """A data link on a table column; `url` may use `${__data.fields.<Column>}` and dashboard variables."""

    title: str
    url: str

    def to_json(self) -> dict[str, object]:
        return {"title": self.title, "url": self.url, "targetBlank": False}


P = TypeVar("P")


def _querying(panel: P, title: str, description: str, sql: str, fmt: Format) -> P:
    """`panel` titled, described and reading `sql` in format `fmt` from the `${datasource}` ClickHouse."""
    target = SQL(sql).format(fmt).datasource(DATASOURCE)
    return panel.title(title).description(description).datasource(DATASOURCE).with_target(target)  # type: ignore[attr-defined]


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


NEUTRAL = ((None, "green"),)


def time_series(
    title: str,
    description: str,
    sql: str,
    unit: str,
    *,
    axis_label: str,
    series_label: str | None = None,
    bars: bool = False,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series; `series_label` names series after that label column (e.g. one line per Model)."""
    panel = (
        _querying(timeseries.Panel(), title, description, sql, Format.TIME_SERIES)
        # The rollup has one row per minute: finer buckets would show gaps and wrong rates.
        .interval("1m")
        .unit(unit)
        .axis_label(axis_label)
        .min(0)
        .fill_opacity(25 if bars or stacked else 10)
        .draw_style(common_models.GraphDrawStyle.BARS if bars else common_models.GraphDrawStyle.LINE)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if series_label:
        panel = panel.display_name(f"${{__field.labels.{series_label}}}")
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    return panel


def big_number(
    title: str,
    description: str,
    sql: str,
    unit: str,
    *,
    decimals: int | None = None,
    thresholds: Sequence[tuple[float | None, str]] = NEUTRAL,
) -> stat.Panel:
    """A stat panel showing the single value of a one-row table query."""
    panel = (
        _querying(stat.Panel(), title, description, sql, Format.TABLE)
        .unit(unit)
        .thresholds(_thresholds(thresholds))
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return panel if decimals is None else panel.decimals(decimals)


def bars(title: str, description: str, sql: str, unit: str) -> bargauge.Panel:
    """Horizontal bars, one per row of a (label, value) table query."""
    return (
        _querying(bargauge.Panel(), title, description, sql, Format.TABLE)
        .unit(unit)
        .min(0)
        .thresholds(_thresholds(NEUTRAL))
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
    )


def distribution(title: str, description: str, sql: str, unit: str, *, axis_label: str) -> histogram.Panel:
    """A histogram of the raw values a table query returns (Grafana computes the buckets)."""
    return (
        _querying(histogram.Panel(), title, description, sql, Format.TABLE)
        .unit(unit)
        .axis_label(axis_label)
        .fill_opacity(60)
        .legend(
            common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.LIST)
        )
    )


def grid(
    title: str,
    description: str,
    sql: str,
    *,
    units: Mapping[str, str],
    links: Mapping[str, Sequence[Link]] | None = None,
    wrap_text: bool = False,
) -> table.Panel:
    """A table; `units` gives each numeric column its unit (a table-wide unit would also reformat numeric-looking
    strings such as user ids), `links` adds data links to columns."""
    panel = (
        _querying(table.Panel(), title, description, sql, Format.TABLE)
        .thresholds(_thresholds(NEUTRAL))
        .filterable(True)
        .cell_options(common_models.TableAutoCellOptions(wrap_text=wrap_text))
    )
    for column, column_unit in units.items():
        panel = panel.override_by_name(column, [DynamicConfigValue(id_val="unit", value=column_unit)])
    for column, column_links in (links or {}).items():
        panel = panel.override_by_name(column, [DynamicConfigValue(id_val="links", value=list(column_links))])
    return panel


def trace_view(title: str, description: str, sql: str) -> dash.Panel:
    """Grafana's trace view over a query in the plugin's trace format (the SDK has no builder for it)."""
    return _querying(dash.Panel().type("traces"), title, description, sql, Format.TRACE).unit("ms")
