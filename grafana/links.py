"""Data links from a row of calls to the whole call (the call dashboard) and to its trace (Grafana Explore)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from llmtap.grafana import sql
from llmtap.grafana.panels import Link
from llmtap.grafana.query import PLUGIN_ID, Format

CALL_UID = "llmtap-call"

_TRACE_ID = "${__data.fields.TraceId}"
_SPAN_ID = "${__data.fields.SpanId}"
_PLACEHOLDER = re.compile(r"\$\{[^}]+\}")


def _encode_keeping_placeholders(text: str) -> str:
    """Percent-encode `text` for a URL but leave `${...}` for Grafana to fill in when the link is clicked."""
    parts, last = [], 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(quote(text[last : match.start()], safe=""))
        parts.append(match.group(0))
        last = match.end()
    parts.append(quote(text[last:], safe=""))
    return "".join(parts)


def call_url() -> str:
    """The call dashboard for the row's span, on the same datasource and time range."""
    return (
        f"/d/{CALL_UID}/llm-call?var-trace_id={_TRACE_ID}&var-span_id={_SPAN_ID}"
        "&${datasource:queryparam}&${__url_time_range}"
    )


def trace_query_sql() -> str:
    """The trace query an Explore link runs: the row's trace id is filled in by Grafana when clicked."""
    return sql.trace_spans(f"'{_TRACE_ID}'")


def trace_url() -> str:
    """Grafana Explore showing the row's whole trace in the trace view."""
    query = {
        "refId": "A",
        "datasource": {"type": PLUGIN_ID, "uid": "${datasource}"},
        "editorType": "sql",
        "format": int(Format.TRACE),
        "queryType": "traces",
        "rawSql": trace_query_sql(),
    }
    panes = {
        "trace": {"datasource": "${datasource}", "queries": [query], "range": {"from": "now-6h", "to": "now"}}
    }
    return "/explore?schemaVersion=1&orgId=1&panes=" + _encode_keeping_placeholders(json.dumps(panes))


def call_links() -> dict[str, list[Link]]:
    """Links for a table that has Time, TraceId and SpanId columns."""
    open_call = Link("Open call (prompt, response, attributes)", call_url())
    return {"Time": [open_call], "TraceId": [open_call, Link("Open trace in Explore", trace_url())]}
