"""A typed query for the Grafana ClickHouse datasource plugin (`grafana-clickhouse-datasource`).

The foundation SDK ships query types for Prometheus, Loki, Tempo… but none for ClickHouse, so this module is the
one place that knows the plugin's query JSON: raw SQL (`editorType: "sql"`), a `queryType` that picks the editor
tab and a numeric `format` that tells the plugin's backend how to shape the frame.
"""

from __future__ import annotations

import enum
import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

PLUGIN_ID = "grafana-clickhouse-datasource"
# The datasource grafana/provisioning/datasources/ creates; dashboards default to it and alert rules use it.
DATASOURCE_UID = "llmtap-clickhouse"
DATASOURCE_NAME = "llmtap ClickHouse"


class Format(enum.IntEnum):
    """The `format` numbers the plugin's backend reads into `sqlutil.FormatQueryOption` (grafana-plugin-sdk-go,
    data/sqlutil/query.go: `FormatOptionTimeSeries FormatQueryOption = iota`, then Table, Logs, Trace, Multi)."""

    TIME_SERIES = 0  # long frames are pivoted to wide: (time, label…, value…) -> one series per label set
    TABLE = 1  # rows as they come; what stat, table and alert queries want
    LOGS = 2
    TRACE = 3  # traceID/spanID/… columns rendered by Grafana's trace view


# The editor tab the plugin's frontend shows for each format (src/types/queryBuilder.ts, `QueryType`).
_QUERY_TYPE = {
    Format.TIME_SERIES: "timeseries",
    Format.TABLE: "table",
    Format.LOGS: "logs",
    Format.TRACE: "traces",
}


def datasource_ref(uid: str) -> DataSourceRef:
    """A reference to a ClickHouse datasource by uid (a fixed uid or `${datasource}`)."""
    return DataSourceRef(type_val=PLUGIN_ID, uid=uid)


class ClickHouseQuery(cogvariants.Dataquery):
    """One raw-SQL target, serialised exactly as the plugin's SQL editor saves it."""

    def __init__(self, raw_sql: str, fmt: Format, ref_id: str, datasource: DataSourceRef | None) -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ref_id
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {}
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        payload.update(
            {
                "editorType": "sql",
                "format": int(self.format),
                "queryType": _QUERY_TYPE[self.format],
                "rawSql": self.raw_sql,
                "refId": self.ref_id,
            }
        )
        return payload


class SQL(cogbuilder.Builder[ClickHouseQuery]):
    """Builder for a ClickHouse SQL target: `SQL("SELECT …").format(Format.TABLE).ref_id("B")`."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = ClickHouseQuery(raw_sql.strip(), Format.TABLE, "A", None)

    def build(self) -> ClickHouseQuery:
        return self._internal

    def format(self, fmt: Format) -> typing.Self:
        self._internal.format = fmt
        return self

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, ref: DataSourceRef) -> typing.Self:
        self._internal.datasource = ref
        return self
