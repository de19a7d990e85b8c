"""Alert rules over the LLM layer, and an example contact point they notify, as Grafana provisioning data.

Each rule is one ClickHouse query in table format — string columns become the alert's labels, the one numeric
column its value — and a threshold on that value. Grafana evaluates the query on the server, where only the
plugin's backend macros exist (no dashboard variables), over `window` seconds ending now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from llmtap.grafana import sql
from llmtap.grafana.query import DATASOURCE_UID, SQL, Format, datasource_ref

FOLDER = "llmtap"
# Rule groups and how often Grafana evaluates them: the operational rules every minute, the answer-quality
# rule, which reads six hours of responses, every ten.
GROUPS = {"llmtap": "1m", "llmtap-answer-quality": "10m"}
CONTACT_POINT = "llmtap example (email)"

# The uncertain-answers rule compares the last RECENT_MINUTES with the rest of its window and fires when the
# share of uncertain answers grew by more than UNCERTAIN_SHARE_INCREASE (0.10 = ten percentage points), counting
# only series with at least MIN_ANSWERS answers on each side so that a handful of calls cannot page anyone.
RECENT_MINUTES = 30
UNCERTAIN_SHARE_INCREASE = 0.10
MIN_ANSWERS = 10


@dataclass(frozen=True)
class Rule:
    """One alert rule: `sql` yields label columns and one value, compared to `threshold`."""

    uid: str
    title: str
    summary: str
    sql: str
    window_seconds: int
    comparison: Literal["gt", "lt"]
    threshold: float
    severity: Literal["warning", "critical"]
    dashboard_uid: str
    for_: str = "0s"
    group: str = "llmtap"


_LATENCY = f"""SELECT Project, ServiceName, Model, quantile(0.95)(DurationMs) AS p95_latency_ms
FROM {sql.CALLS}
WHERE $__timeFilter(Timestamp)
GROUP BY Project, ServiceName, Model"""

_ERROR_RATE = f"""SELECT Project, ServiceName, {sql.error_ratio()} AS error_rate
FROM {sql.CALLS}
WHERE $__timeFilter(Timestamp)
GROUP BY Project, ServiceName"""

_REDACTIONS = f"""SELECT Project, ServiceName, Model, count() AS redacted_calls
FROM {sql.CALLS}
WHERE $__timeFilter(Timestamp) AND RedactionCount > 0
GROUP BY Project, ServiceName, Model"""

# Services with calls in the last hour; the value is their calls in the last five minutes.
_TRAFFIC_DROP = f"""SELECT Project, ServiceName, countIf(Timestamp > $__toTime - INTERVAL 5 MINUTE) AS calls_last_5m
FROM {sql.CALLS}
WHERE $__timeFilter(Timestamp)
GROUP BY Project, ServiceName"""

_RECENT = f"Timestamp > $__toTime - INTERVAL {RECENT_MINUTES} MINUTE"
_UNCERTAIN = f"""SELECT
  Project, ServiceName, Model,
  avgIf(uncertain, {_RECENT}) - avgIf(uncertain, NOT ({_RECENT})) AS uncertain_share_increase
FROM (
  SELECT Project, ServiceName, Model, Timestamp, {sql.is_uncertain()} AS uncertain
  FROM {sql.CALLS}
  WHERE $__timeFilter(Timestamp) AND {sql.ANSWER_OPERATIONS}
)
GROUP BY Project, ServiceName, Model
HAVING countIf({_RECENT}) >= {MIN_ANSWERS} AND countIf(NOT ({_RECENT})) >= {MIN_ANSWERS}"""

RULES = (
    Rule(
        "llmtap-p95-latency",
        "LLM p95 latency above 5 s",
        "p95 latency of {{ $labels.Model }} in {{ $labels.ServiceName }} is "
        '{{ printf "%.0f" $values.A.Value }} ms over the last 5 minutes.',
        _LATENCY,
        300,
        "gt",
        5000,
        "warning",
        "llmtap-overview",
    ),
    Rule(
        "llmtap-error-rate",
        "LLM error rate above 1 %",
        "{{ humanizePercentage $values.A.Value }} of the LLM calls of {{ $labels.ServiceName }} failed "
        "in the last 5 minutes.",
        _ERROR_RATE,
        300,
        "gt",
        0.01,
        "critical",
        "llmtap-failures",
    ),
    Rule(
        "llmtap-redactions",
        "LLM call content was redacted",
        '{{ printf "%.0f" $values.A.Value }} call(s) of {{ $labels.Model }} in {{ $labels.ServiceName }} '
        "had content redacted in the last 5 minutes: secrets or personal data reached a prompt or response.",
        _REDACTIONS,
        300,
        "gt",
        0,
        "warning",
        "llmtap-explorer",
    ),
    Rule(
        "llmtap-traffic-stopped",
        "LLM calls stopped",
        "{{ $labels.ServiceName }} made LLM calls in the last hour but none in the last 5 minutes.",
        _TRAFFIC_DROP,
        3600,
        "lt",
        1,
        "critical",
        "llmtap-overview",
    ),
    Rule(
        "llmtap-uncertain-answers",
        "More uncertain LLM answers",
        'The share of uncertain answers ("I\'m not sure", …) of {{ $labels.Model }} in {{ $labels.ServiceName }} '
        f"rose by {{{{ humanizePercentage $values.A.Value }}}} in the last {RECENT_MINUTES} minutes compared "
        "with the 6 hours before.",
        _UNCERTAIN,
        6 * 3600 + RECENT_MINUTES * 60,
        "gt",
        UNCERTAIN_SHARE_INCREASE,
        "warning",
        "llmtap-overview",
        group="llmtap-answer-quality",
    ),
)

_EXPRESSIONS = DataSourceRef(type_val="__expr__", uid="__expr__")


def _rule_builder(rule: Rule) -> alerting.Rule:
    query = (
        alerting.Query("A")
        .datasource_uid(DATASOURCE_UID)
        .relative_time_range(RelativeTimeRange(from_val=rule.window_seconds, to=0))
        .model(SQL(rule.sql).format(Format.TABLE).ref_id("A").datasource(datasource_ref(DATASOURCE_UID)))
    )
    threshold = (
        alerting.Query("B")
        .datasource_uid("__expr__")
        .model(
            expr.TypeThreshold()
            .ref_id("B")
            .expression("A")
            .datasource(_EXPRESSIONS)
            .conditions(
                [
                    expr.ExprTypeThresholdConditions().evaluator(
                        expr.ExprTypeThresholdConditionsEvaluator()
                        .type(rule.comparison)
                        .params([rule.threshold])
                    )
                ]
            )
        )
    )
    return (
        alerting.Rule(rule.title)
        .uid(rule.uid)
        .queries([query, threshold])
        .condition("B")
        .for_val(rule.for_)
        # No rows means no calls matched (nothing slow, nothing failing, no traffic at all): not an alert.
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"severity": rule.severity, "source": "llmtap"})
        .annotations({"summary": rule.summary})
        .notification_settings(alerting.NotificationSettings().receiver(CONTACT_POINT))
    )


def _plain(value: Any) -> Any:
    """SDK models -> plain dicts and lists (what YAML and JSON writers take)."""
    encoder = JSONEncoder()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "to_json"):
        return _plain(encoder.default(value))
    return value


def provisioning() -> dict[str, Any]:
    """The alerting provisioning file: the rule group and the example contact point.

    The SDK builds rules in the HTTP API's shape; the file format nests them in a group with a folder title and
    has no per-rule org/folder/group keys, and links a rule to a dashboard with `dashboardUid`.
    """
    groups = {name: [] for name in GROUPS}
    for rule in RULES:
        data = _plain(_rule_builder(rule).build())
        for api_only in ("orgID", "folderUID", "ruleGroup"):
            data.pop(api_only, None)
        data["dashboardUid"] = rule.dashboard_uid
        data["isPaused"] = False
        groups[rule.group].append(data)
    return {
        "apiVersion": 1,
        "groups": [
            {"orgId": 1, "name": name, "folder": FOLDER, "interval": GROUPS[name], "rules": rules}
            for name, rules in groups.items()
        ],
        "contactPoints": [
            {
                "orgId": 1,
                "name": CONTACT_POINT,
                "receivers": [
                    {
                        "uid": "llmtap-example-email",
                        "type": "email",
                        # An example: replace the address (Grafana also needs SMTP settings, GF_SMTP_*), or point
                        # the rules' notification_settings at a contact point of your own.
                        "settings": {"addresses": "llm-oncall@example.com", "singleEmail": True},
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
    }
