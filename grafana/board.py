"""A dashboard under construction: common settings, and a grid that places panels so they never overlap."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as models

GRID_WIDTH = 24  # Grafana's grid has 24 columns
TAG = "llmtap"


class Board:
    """Panels flow left to right in 24-column rows and wrap when full; `section()` starts a titled row.

    Every dashboard gets the same defaults (last 6 hours, 30 s refresh, shared crosshair) and a link menu to the
    other llmtap dashboards that keeps the time range and the variable selections.
    """

    def __init__(
        self,
        uid: str,
        title: str,
        description: str,
        variables: Sequence[cogbuilder.Builder[models.VariableModel]],
    ) -> None:
        self._builder = (
            dash.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags([TAG])
            .time("now-6h", "now")
            .refresh("30s")
            .timezone("browser")
            .tooltip(models.DashboardCursorSync.CROSSHAIR)
            .timepicker(dash.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m", "1h"]))
            .editable()
            .variables(list(variables))
            .link(
                dash.DashboardLink("llmtap")
                .type(models.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )
        self._x = 0
        self._y = 0
        self._row_height = 0
        self._next_id = 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0

    def section(self, title: str) -> Board:
        """Start an (expanded) row titled `title` below everything placed so far."""
        if self._x:
            self._newline()
        row = dash.Row(title).id(self._new_id()).grid_pos(models.GridPos(h=1, w=GRID_WIDTH, x=0, y=self._y))
        self._builder.with_row(row)
        self._y += 1
        return self

    def add(self, panel: dash.Panel | cogbuilder.Builder[models.Panel], width: int, height: int) -> Board:
        """Place `panel` right of the previous one, or at the start of the next line when it does not fit."""
        if not 0 < width <= GRID_WIDTH:
            raise ValueError(f"panel width must be 1..{GRID_WIDTH}, got {width}")
        if self._x + width > GRID_WIDTH:
            self._newline()
        placed = panel.id(self._new_id()).grid_pos(  # type: ignore[attr-defined]
            models.GridPos(h=height, w=width, x=self._x, y=self._y)
        )
        self._builder.with_panel(placed)
        self._x += width
        self._row_height = max(self._row_height, height)
        return self

    def build(self) -> models.Dashboard:
        return self._builder.build()
