"""Grafana dashboards as code, their generated JSON, provisioning files and alert rules."""
