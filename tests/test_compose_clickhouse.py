"""The ClickHouse side of docker-compose.yml: the init script applies exactly the migrations `llmtap db migrate`
applies (replayed on chDB and compared with the runner's own result), loads the same prices, creates the users the
collector and Grafana log in as, and refuses bad input; the server config keeps system logs bounded."""

from __future__ import annotations

import hashlib
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from compose_support import (
    INIT_SCRIPT,
    MIGRATIONS_DIR,
    REPO,
    bind_mounts,
    compose_model,
    replay_on_chdb,
    run_init_script,
    user_env,
)
from llmtap.clickhouse.migrations import discover

DATABASE = "otel_init"  # a database name of the user's choosing (LLMTAP_DATABASE), not the default


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    process, calls = run_init_script(tmp_path_factory.mktemp("init"), env={"LLMTAP_DATABASE": DATABASE})
    assert process.returncode == 0, process.stderr
    return process, calls


@pytest.fixture(scope="module")
def replay(first_run, tmp_path_factory):
    return replay_on_chdb(
        first_run[1], tmp_path_factory.mktemp("replay") / "chdb", reference_database="otel_ref"
    )


def _migration_calls(calls):
    return [call for call in calls if call["multiquery"] and not call.get("query")]


def test_the_image_runs_the_script_with_the_migrations_and_prices_mounted():
    clickhouse = compose_model()["services"]["clickhouse"]
    mounts = dict(bind_mounts(clickhouse))
    env = clickhouse["environment"]
    assert mounts["./clickhouse/server/initdb/llmtap-init.sh"].startswith("/docker-entrypoint-initdb.d/")
    assert mounts["./clickhouse/migrations"] == env["LLMTAP_MIGRATIONS_DIR"]
    assert mounts["./clickhouse/data"] + "/model_prices.csv" == env["LLMTAP_PRICES_FILE"]
    assert env["CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS"] == "1", "new migrations and passwords apply on restart"
    assert env["CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT"] == "1", (
        "the administrator must be able to create users"
    )
    # An executable script is run; a non-executable one would be sourced into the image's entrypoint.
    mode = subprocess.run(
        ["git", "ls-files", "-s", str(INIT_SCRIPT.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()[0]
    assert mode == "100755"


def test_it_feeds_exactly_the_migration_files_in_version_order(first_run):
    _, calls = first_run
    fed = _migration_calls(calls)
    files = discover(MIGRATIONS_DIR)
    assert [call["stdin"] for call in fed] == [m.path.read_text(encoding="utf-8") for m in files]
    assert all(call["database"] == DATABASE for call in fed)
    recorded = [call["params"] for call in calls if call["params"]]
    assert recorded == [{"version": str(m.version), "name": m.name, "checksum": m.checksum} for m in files], (
        "each applied file is recorded like the runner records it"
    )


def test_the_replayed_schema_is_the_one_llmtap_db_migrate_builds(replay):
    assert replay["database"] == DATABASE
    assert replay["schema"] == replay["reference_schema"]
    assert {"otel_traces", "otel_logs", "llm_calls", "llm_calls_mv", "llmtap_migrations"} <= set(
        replay["schema"]
    )


def test_llmtap_db_migrate_afterwards_finds_nothing_to_do(replay):
    assert replay["runner_applied"] == []
    assert replay["runner_changed"] == [], "same checksums as the runner computes"
    assert replay["runner_already"] == [m.version for m in discover(MIGRATIONS_DIR)]


def test_prices_are_loaded_like_llmtap_db_migrate_loads_them(replay):
    assert replay["prices"], "the bundled prices are loaded"
    assert replay["prices"] == replay["reference_prices"]


def test_a_second_start_applies_nothing_again(tmp_path):
    versions = [m.version for m in discover(MIGRATIONS_DIR)]
    process, calls = run_init_script(tmp_path, applied=versions)
    assert process.returncode == 0, process.stderr
    assert _migration_calls(calls) == []
    assert process.stdout.count("already applied") == len(versions)
    assert any("model_prices" in (call.get("query") or "") for call in calls), (
        "prices are reloaded every start"
    )


def test_a_new_migration_is_applied_alone(tmp_path):
    versions = [m.version for m in discover(MIGRATIONS_DIR)]
    process, calls = run_init_script(tmp_path, applied=versions[:-1])
    assert process.returncode == 0, process.stderr
    assert [call["stdin"] for call in _migration_calls(calls)] == [
        discover(MIGRATIONS_DIR)[-1].path.read_text()
    ]


# --- Users --------------------------------------------------------------------------------------------------------


def test_users_are_the_ones_the_collector_and_grafana_log_in_as(first_run, replay):
    services = compose_model()["services"]
    writer = services["otel-collector"]["environment"]["CLICKHOUSE_WRITER_USER"]
    reader = services["grafana"]["environment"]["CLICKHOUSE_READER_USER"]
    statements = replay["access_control"]
    created = {
        re.match(r"CREATE USER IF NOT EXISTS (\w+)", s).group(1) for s in statements if "CREATE USER" in s
    }
    assert created == {writer, reader}
    grants = {re.search(r" TO (\w+)$", s).group(1): s for s in statements if s.startswith("GRANT")}
    assert grants[writer] == f"GRANT INSERT, SHOW TABLES, SHOW COLUMNS ON {DATABASE}.* TO {writer}"
    assert grants[reader] == f"GRANT SELECT ON {DATABASE}.* TO {reader}"
    profiles = {re.search(r" TO (\w+)$", s).group(1): s for s in statements if "SETTINGS PROFILE" in s}
    assert "readonly = 1" in profiles[reader]
    assert "max_execution_time" in profiles[reader] and "CHANGEABLE_IN_READONLY" in profiles[reader]
    assert "async_insert = 1" in profiles[writer] and "wait_for_async_insert = 1" in profiles[writer]


def test_passwords_reach_clickhouse_only_as_sha256_hashes(first_run, replay):
    _, calls = first_run
    env = user_env()
    transcript = repr(calls)
    for key, user_key in (
        ("CLICKHOUSE_WRITER_PASSWORD", "CLICKHOUSE_WRITER_USER"),
        ("CLICKHOUSE_READER_PASSWORD", "CLICKHOUSE_READER_USER"),
    ):
        assert env[key] not in transcript, f"{key} appears in clear"
        digest = hashlib.sha256(env[key].encode()).hexdigest()
        assert any(
            s.startswith(f"ALTER USER {env[user_key]} IDENTIFIED WITH sha256_hash BY '{digest}'")
            for s in replay["access_control"]
        )


def test_a_password_with_quotes_cannot_inject_sql(tmp_path):
    password = "x'; DROP DATABASE otel; --"
    process, calls = run_init_script(tmp_path, env={"CLICKHOUSE_WRITER_PASSWORD": password})
    assert process.returncode == 0, process.stderr
    assert password not in repr(calls) and "DROP DATABASE" not in repr(calls)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CLICKHOUSE_WRITER_USER": "writer'; DROP USER x; --"},
            "CLICKHOUSE_WRITER_USER must be a plain identifier",
        ),
        ({"CLICKHOUSE_READER_USER": ""}, "CLICKHOUSE_READER_USER must be a plain identifier"),
        ({"CLICKHOUSE_READER_PASSWORD": ""}, "CLICKHOUSE_READER_PASSWORD is not set"),
        ({"CLICKHOUSE_READER_USER": "llmtap_writer"}, "must differ"),
        ({"LLMTAP_DATABASE": "otel-prod"}, "LLMTAP_DATABASE must be a plain identifier"),
        ({"LLMTAP_MIGRATIONS_DIR": "/nonexistent"}, "no migration files in /nonexistent"),
        ({"LLMTAP_PRICES_FILE": "/nonexistent.csv"}, "does not exist"),
    ],
)
def test_bad_settings_stop_the_script_with_a_clear_message(tmp_path, env, message):
    process, calls = run_init_script(tmp_path, env=env)
    assert process.returncode != 0
    assert message in process.stderr
    assert calls == [], "settings are checked before anything reaches ClickHouse"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "2_b.sql"], "2_b.sql: migration files must be named NNNN_<name>.sql"),
        (["0001_a.sql", "0001_b.sql"], "0001_b.sql: version 0001 is used twice"),
    ],
)
def test_bad_migration_files_stop_everything_before_any_statement(tmp_path, files, message):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for name in files:
        (directory / name).write_text("CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Memory;\n")
    process, calls = run_init_script(tmp_path, env={"LLMTAP_MIGRATIONS_DIR": str(directory)})
    assert process.returncode != 0 and message in process.stderr
    assert calls == [], "nothing reached ClickHouse"


def test_a_failing_migration_stops_the_start_and_is_not_recorded(tmp_path):
    files = discover(MIGRATIONS_DIR)
    process, calls = run_init_script(
        tmp_path, env={"FAKE_CH_FAIL_ON": files[1].path.read_text(encoding="utf-8")}
    )
    assert process.returncode != 0 and "Syntax error" in process.stderr
    assert [call["params"]["version"] for call in calls if call["params"]] == [str(files[0].version)]
    assert [call["stdin"] for call in _migration_calls(calls)][-1] == files[1].path.read_text(
        encoding="utf-8"
    )
    assert not any("CREATE USER" in (call.get("query") or "") for call in calls)
    assert "done" not in process.stdout


# --- Server configuration -----------------------------------------------------------------------------------------

CONFIG = REPO / "clickhouse" / "server" / "config.d" / "llmtap.xml"
USERS = REPO / "clickhouse" / "server" / "users.d" / "llmtap.xml"


def test_system_log_tables_are_bounded():
    root = ET.parse(CONFIG).getroot()
    assert root.tag == "clickhouse"
    bounded = {}
    for section in root:
        ttl = section.find("ttl")
        if ttl is not None:
            bounded[section.tag] = ttl.text
    required = {
        "query_log",
        "trace_log",
        "metric_log",
        "asynchronous_metric_log",
        "part_log",
        "processors_profile_log",
        "text_log",
        "query_thread_log",
        "query_views_log",
        "query_metric_log",
        "asynchronous_insert_log",
        "opentelemetry_span_log",
        "error_log",
        "latency_log",
    }
    assert required <= set(bounded), f"unbounded: {sorted(required - set(bounded))}"
    for table, ttl in bounded.items():
        match = re.fullmatch(r"(event_date|finish_date) \+ INTERVAL (\d+) DAY DELETE", ttl)
        assert match and 1 <= int(match.group(2)) <= 30, f"{table}: {ttl}"
    assert bounded["opentelemetry_span_log"].startswith("finish_date"), "that table has no event_date"


def test_memory_fits_a_small_host():
    root = ET.parse(CONFIG).getroot()
    ratio = float(root.findtext("max_server_memory_usage_to_ram_ratio"))
    assert 0.5 <= ratio <= 0.9
    for cache in ("mark_cache_size", "uncompressed_cache_size", "index_mark_cache_size"):
        assert int(root.findtext(cache)) <= 512 * 2**20, f"{cache} sized for a dedicated server"
    assert root.findtext("settings_constraints_replace_previous") == "true", "CHANGEABLE_IN_READONLY needs it"
    profile = ET.parse(USERS).getroot().find("profiles/default")
    per_query = int(profile.findtext("max_memory_usage"))
    assert int(profile.findtext("max_bytes_before_external_group_by")) < per_query
    assert int(profile.findtext("max_bytes_before_external_sort")) < per_query
    limit = compose_model()["services"]["clickhouse"]["deploy"]["resources"]["limits"]["memory"]
    container = int(limit[:-1]) * (2**30 if limit.endswith("g") else 2**20)
    assert per_query < container * ratio, "one query cannot take the whole server"


def test_a_retried_insert_is_dropped_from_the_views_too():
    """otel_traces drops a repeated block (migration 0017); the views must, whatever the server's default."""
    profile = ET.parse(USERS).getroot().find("profiles/default")
    assert profile.findtext("deduplicate_blocks_in_dependent_materialized_views") == "1"


def test_the_server_listens_where_the_collector_and_grafana_connect():
    root = ET.parse(CONFIG).getroot()
    assert root.find("tcp_port") is None and root.find("http_port") is None, "the image's 9000/8123 stay"
    services = compose_model()["services"]
    assert services["otel-collector"]["environment"]["CLICKHOUSE_ENDPOINT"].startswith(
        "tcp://clickhouse:9000"
    )
    assert services["grafana"]["environment"]["CLICKHOUSE_PORT"] == "9000"
    assert services["grafana"]["environment"]["CLICKHOUSE_PROTOCOL"] == "native"
    assert [spec.rsplit(":", 1)[1] for spec in services["clickhouse"]["ports"]] == ["8123"]
