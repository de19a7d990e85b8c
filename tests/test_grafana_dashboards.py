"""The generated Grafana files: committed = generated, and the dashboards, links and provisioning hold together
(ids, grid, datasource, variables, units, defaults) — everything that can be checked without a Grafana server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

pytest.importorskip("grafana_foundation_sdk")
yaml = pytest.importorskip("yaml")

from click.testing import CliRunner  # noqa: E402
from llmtap.grafana import alerts, build, links, validate  # noqa: E402
from llmtap.grafana.cli import grafana  # noqa: E402
from llmtap.grafana.interpolate import ALL, Variable, apply_conditional_all  # noqa: E402
from llmtap.grafana.query import DATASOURCE_UID, PLUGIN_ID  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DOCUMENTS = {doc["uid"]: doc for doc in (build.dashboard_json(make()) for make in build.DASHBOARDS)}
CALL_DASHBOARDS = ("llmtap-overview", "llmtap-failures", "llmtap-models", "llmtap-explorer")
DATA_PANELS = {uid: [p for p in doc["panels"] if p["type"] != "row"] for uid, doc in DOCUMENTS.items()}
ALERTING = yaml.safe_load((GRAFANA / build.ALERTS_FILE).read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _variables(doc: dict) -> dict[str, dict]:
    return {v["name"]: v for v in doc["templating"]["list"]}


def _sqls(doc: dict) -> list[str]:
    queries = [t["rawSql"] for p in doc["panels"] for t in p.get("targets", [])]
    return queries + [v["query"] for v in doc["templating"]["list"] if v["type"] == "query"]


# --- committed files = generated files ---------------------------------------------------------------------------


def test_committed_files_are_what_the_code_generates() -> None:
    assert build.stale() == [], "run `llmtap grafana build` and commit the result"


def test_check_reports_a_hand_edited_or_orphaned_file(tmp_path: Path) -> None:
    for out in build.outputs():
        (tmp_path / out.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out.path).write_text(out.text)
    runner = CliRunner()
    assert (
        runner.invoke(grafana, ["build", "--check", "--no-validate", "--output", str(tmp_path)]).exit_code
        == 0
    )

    edited = tmp_path / "dashboards" / "llmtap-overview.json"
    edited.write_text(edited.read_text().replace("LLM overview", "My overview"))
    (tmp_path / "dashboards" / "old.json").write_text("{}")
    result = runner.invoke(grafana, ["build", "--check", "--no-validate", "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert "out of date: dashboards/llmtap-overview.json" in result.output
    assert "out of date: dashboards/old.json" in result.output

    result = runner.invoke(grafana, ["build", "--no-validate", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote dashboards/llmtap-overview.json" in result.output
    assert not (tmp_path / "dashboards" / "old.json").exists()
    assert build.stale(tmp_path) == []


def test_build_validates_every_query_on_chdb_before_writing(tmp_path: Path) -> None:
    shutil.copytree(GRAFANA / "dashboards", tmp_path / "dashboards")
    shutil.copytree(GRAFANA / "provisioning", tmp_path / "provisioning")
    # A subprocess: the scratch chDB must not share this test process with other tests' chDB stores.
    done = subprocess.run(
        [sys.executable, "-m", "llmtap", "grafana", "build", "--check", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "all dashboard, variable and alert queries run on ClickHouse" in done.stderr
    assert "up to date" in done.stdout


def test_list_names_every_dashboard_and_rule() -> None:
    output = CliRunner().invoke(grafana, ["list"]).output
    for uid in DOCUMENTS:
        assert uid in output
    for rule in alerts.RULES:
        assert rule.uid in output


# --- dashboards --------------------------------------------------------------------------------------------------


def test_uids_are_stable_and_unique() -> None:
    assert list(DOCUMENTS) == [
        "llmtap-overview",
        "llmtap-failures",
        "llmtap-models",
        "llmtap-explorer",
        "llmtap-call",
    ]
    for uid in DOCUMENTS:
        assert (GRAFANA / "dashboards" / f"{uid}.json").is_file()


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_panel_ids_and_titles_are_unique(uid: str) -> None:
    ids = [p["id"] for p in DOCUMENTS[uid]["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    titles = [p["title"] for p in DATA_PANELS[uid]]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_grid_has_no_overlaps_and_fits_24_columns(uid: str) -> None:
    boxes = []
    for panel in DOCUMENTS[uid]["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, 24, 1) and panel["panels"] == []
        boxes.append((panel["title"], pos))
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title_a!r} overlaps {title_b!r}"


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_defaults_last_6_hours_refresh_30s(uid: str) -> None:
    doc = DOCUMENTS[uid]
    assert doc["time"] == {"from": "now-6h", "to": "now"}
    assert doc["refresh"] == "30s"
    assert "llmtap" in doc["tags"]
    (menu,) = doc["links"]
    assert (
        menu["type"] == "dashboards"
        and menu["tags"] == ["llmtap"]
        and menu["keepTime"]
        and menu["includeVars"]
    )


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_datasource_references_resolve_to_the_provisioned_clickhouse(uid: str) -> None:
    doc = DOCUMENTS[uid]
    variable = _variables(doc)["datasource"]
    assert variable["type"] == "datasource" and variable["query"] == PLUGIN_ID
    assert variable["current"]["value"] == DATASOURCE_UID == _provisioned_datasource()["uid"]
    refs = [p["datasource"] for p in DATA_PANELS[uid]]
    refs += [t["datasource"] for p in DATA_PANELS[uid] for t in p["targets"]]
    refs += [v["datasource"] for v in doc["templating"]["list"] if v["type"] == "query"]
    assert refs and all(ref == {"type": PLUGIN_ID, "uid": "${datasource}"} for ref in refs)


_REFERENCE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_every_variable_used_in_sql_is_defined(uid: str) -> None:
    defined = set(_variables(DOCUMENTS[uid]))
    used = set()
    for sql in _sqls(DOCUMENTS[uid]):
        for match in _REFERENCE.finditer(sql):
            name = next(group for group in match.groups() if group)
            if not name.startswith("__"):  # plugin macros ($__timeFilter, …)
                used.add(name)
        # the plugin's own parsing of $__conditionalAll(condition, $variable) accepts every use
        apply_conditional_all(sql, {name: Variable(name, ALL) for name in defined})
    assert used <= defined, f"undefined: {used - defined}"


@pytest.mark.parametrize("uid", CALL_DASHBOARDS)
def test_call_dashboards_have_the_filter_variables(uid: str) -> None:
    variables = _variables(DOCUMENTS[uid])
    for name in ("datasource", "project", "service", "model", "user", "tag"):
        assert name in variables
    for name in ("project", "service", "model", "user", "tag"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["current"]["value"] == "$__all"
        assert variables[name]["refresh"] == 2  # on time range change


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_every_panel_shows_units(uid: str) -> None:
    for panel in DATA_PANELS[uid]:
        defaults = panel["fieldConfig"]["defaults"]
        if (
            panel["type"] == "table"
        ):  # per-column units; checked against the result types in test_grafana_queries
            continue
        assert defaults.get("unit"), panel["title"]
        if panel["type"] in ("timeseries", "histogram"):
            assert defaults["custom"].get("axisLabel"), panel["title"]


@pytest.mark.parametrize("uid", DOCUMENTS)
def test_sql_targets_use_the_plugins_format_numbers(uid: str) -> None:
    expected = {"timeseries": (0, "timeseries"), "traces": (3, "traces")}
    for panel in DATA_PANELS[uid]:
        (target,) = panel["targets"]
        assert target["editorType"] == "sql"
        assert (target["format"], target["queryType"]) == expected.get(panel["type"], (1, "table")), panel[
            "title"
        ]
        assert "$__timeFilter" in target["rawSql"] or "trace_id" in target["rawSql"], panel["title"]


def test_the_issue_panels_exist() -> None:
    titles = {uid: {p["title"] for p in panels} for uid, panels in DATA_PANELS.items()}
    assert {
        "Calls",
        "Error rate",
        "p95 latency",
        "Input tokens",
        "Output tokens",
        "Cost",
        "Calls per second by model",
        "Calls per second by service",
        "Error rate by model",
        "Latency percentiles",
        "Time to first chunk (streams)",
        "Tokens per second",
        "Cost per hour by model",
    } <= titles["llmtap-overview"]
    assert {"Errors by error type", "Errors by model", "Errors by service", "Latest failed calls"} <= titles[
        "llmtap-failures"
    ]
    assert {"Models", "Latency distribution"} <= titles["llmtap-models"]
    assert {"Calls"} <= titles["llmtap-explorer"]
    assert {"Call", "Prompt", "Response", "Attributes", "Trace"} <= titles["llmtap-call"]
    explorer_variables = set(_variables(DOCUMENTS["llmtap-explorer"]))
    assert {"model", "service", "user", "session", "tag", "status", "search"} <= explorer_variables


# --- links from rows to the call and its trace -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "title"), [("llmtap-explorer", "Calls"), ("llmtap-failures", "Latest failed calls")]
)
def test_call_rows_link_to_the_call_dashboard_and_the_trace(uid: str, title: str) -> None:
    (panel,) = [p for p in DATA_PANELS[uid] if p["title"] == title]
    column_links = validate.column_overrides(panel, "links")
    call_variables = set(_variables(DOCUMENTS[links.CALL_UID]))
    urls = [link["url"] for column in ("Time", "TraceId") for link in column_links[column]]
    call_urls = [url for url in urls if url.startswith(f"/d/{links.CALL_UID}/")]
    trace_urls = [url for url in urls if url.startswith("/explore?")]
    assert call_urls and trace_urls
    for url in call_urls:
        params = parse_qs(urlparse(url).query)
        assert params["var-trace_id"] == ["${__data.fields.TraceId}"]
        assert params["var-span_id"] == ["${__data.fields.SpanId}"]
        assert {key[4:] for key in params if key.startswith("var-")} <= call_variables
    panes = json.loads(unquote(parse_qs(urlparse(trace_urls[0]).query)["panes"][0]))
    (query,) = panes["trace"]["queries"]
    assert query["format"] == 3 and query["datasource"] == {"type": PLUGIN_ID, "uid": "${datasource}"}
    assert "'${__data.fields.TraceId}'" in query["rawSql"]


# --- provisioning ------------------------------------------------------------------------------------------------


def _provisioned_datasource() -> dict:
    document = yaml.safe_load((GRAFANA / "provisioning/datasources/llmtap-clickhouse.yaml").read_text())
    (datasource,) = document["datasources"]
    return datasource


def _grafana_service() -> dict:
    return COMPOSE["services"]["grafana"]


def test_datasource_is_the_read_only_clickhouse_user_from_the_environment() -> None:
    datasource = _provisioned_datasource()
    assert (
        datasource["type"] == PLUGIN_ID and datasource["uid"] == DATASOURCE_UID and not datasource["editable"]
    )
    settings = datasource["jsonData"]
    assert settings["username"] == "$CLICKHOUSE_READER_USER"
    assert datasource["secureJsonData"]["password"] == "$CLICKHOUSE_READER_PASSWORD"
    environment = _grafana_service()["environment"]
    values = json.dumps(datasource)  # the parsed values, not the comments
    for name in re.findall(r"\$\{?([A-Z_]+)", values):
        assert name in environment, f"{name} is not set for Grafana in docker-compose.yml"
    assert "grafana-clickhouse-datasource@" in environment["GF_PLUGINS_PREINSTALL_SYNC"]


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    document = yaml.safe_load((GRAFANA / "provisioning/dashboards/llmtap.yaml").read_text())
    (provider,) = document["providers"]
    assert provider["type"] == "file" and provider["folder"] == "llmtap"
    mounts = {source: target for source, target, *_ in (v.split(":") for v in _grafana_service()["volumes"])}
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_alert_rules_are_valid_provisioning() -> None:
    groups = ALERTING["groups"]
    assert [(g["name"], g["folder"], g["interval"]) for g in groups] == [
        ("llmtap", "llmtap", "1m"),
        ("llmtap-answer-quality", "llmtap", "10m"),
    ]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len({rule["uid"] for rule in rules}) == len(rules) == 5
    receivers = {point["name"] for point in ALERTING["contactPoints"]}
    for rule in rules:
        ref_ids = {data["refId"] for data in rule["data"]}
        assert rule["condition"] in ref_ids
        (query,) = [data for data in rule["data"] if data["datasourceUid"] != "__expr__"]
        assert query["datasourceUid"] == DATASOURCE_UID and query["model"]["format"] == 1
        assert rule["notification_settings"]["receiver"] in receivers
        assert rule["dashboardUid"] in DOCUMENTS
        # Grafana expands $NAME in provisioned titles and labels (not in query models or annotations).
        assert "$" not in rule["title"] + json.dumps(rule["labels"])
