"""`llmtap grafana`."""

from llmtap.cli import not_built_yet

grafana = not_built_yet("grafana", "Build the Grafana dashboards from code.")
