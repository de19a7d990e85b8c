"""collector/otelcol.yaml (and its auth overlay), checked without a collector: only documented keys, and an
exporter that writes exactly into the tables llmtap's migrations create, batched in a persistent queue."""

from __future__ import annotations

import copy
import re

import pytest
from compose_support import (
    AUTH_COMPOSE_FILE,
    COLLECTOR_AUTH_CONFIG,
    COLLECTOR_CONFIG,
    check_collector_config,
    compose_model,
    env_placeholders,
    load_yaml,
    merge_configs,
    migration_objects,
    named_volumes,
    parse_port,
    table_ddl,
)

SIGNALS = ("traces", "metrics", "logs")


@pytest.fixture(scope="module")
def config():
    return load_yaml(COLLECTOR_CONFIG)


@pytest.fixture(scope="module")
def exporter(config):
    return config["exporters"]["clickhouse"]


@pytest.fixture(scope="module")
def collector_service():
    return compose_model()["services"]["otel-collector"]


def test_every_key_is_one_the_components_document(config):
    assert check_collector_config(config) == []


def test_the_key_check_catches_typos_and_wrong_types(config):
    broken = copy.deepcopy(config)
    broken["exporters"]["clickhouse"]["sending_queue"]["batch"]["min_items"] = 5000
    broken["exporters"]["clickhouse"]["create_schema"] = "no"
    broken["receivers"]["otlp"]["protocols"]["http"]["cors"]["allowed_origin"] = ["*"]
    broken["processors"]["batch"] = {}
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp")
    problems = check_collector_config(broken)
    assert len(problems) == 6, problems  # batch: not in the table, and in no pipeline
    assert any("min_items" in p for p in problems) and any("'no' is not a boolean" in p for p in problems)


def test_pipelines_for_every_signal_start_with_the_memory_limiter(config):
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == set(SIGNALS)
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert pipeline["exporters"] == ["clickhouse"], name
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and limiter["limit_percentage"] > limiter["spike_limit_percentage"]


def test_batching_is_the_exporters_own_persistent_queue(config, exporter):
    # The exporter README recommends sending_queue.batch over the `batch` processor (which loses data on a crash).
    assert not any(p.split("/")[0] == "batch" for p in config.get("processors", {}))
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    assert queue["batch"]["min_size"] >= 5000, "ClickHouse wants inserts of thousands of rows"
    assert queue["batch"]["max_size"] >= queue["batch"]["min_size"]
    assert queue["batch"]["sizer"] == "items"
    storage = queue["storage"]
    assert storage.split("/")[0] == "file_storage" and storage in config["service"]["extensions"]
    assert "wait_for_result" not in queue, "not available with a persistent queue"
    retry = exporter["retry_on_failure"]
    assert retry["enabled"] is True
    minutes = int(re.fullmatch(r"(\d+)m", retry["max_elapsed_time"]).group(1))
    assert minutes >= 10, "retries must outlast a ClickHouse restart"


def test_the_queue_directory_is_the_persistent_volume(config, collector_service):
    directory = config["extensions"][config["exporters"]["clickhouse"]["sending_queue"]["storage"]][
        "directory"
    ]
    assert ("collector-queue", directory) in named_volumes(collector_service)


def test_exporter_writes_into_the_tables_the_migrations_create(exporter):
    tables = {name for name, kind in migration_objects().items() if kind == "TABLE"}
    targets = [exporter["traces_table_name"], exporter["logs_table_name"]]
    targets += [table["name"] for table in exporter["metrics_tables"].values()]
    assert set(exporter["metrics_tables"]) == {
        "gauge",
        "sum",
        "summary",
        "histogram",
        "exponential_histogram",
    }
    missing = [name for name in targets if name not in tables]
    assert not missing, f"the exporter writes into tables no migration creates: {missing}"


def test_schema_database_and_ttl_belong_to_the_migrations(exporter, collector_service):
    from llmtap.clickhouse.connection import DEFAULT_DATABASE

    assert exporter["create_schema"] is False, "llmtap's migrations own the schema, the exporter only inserts"
    assert "table_engine" not in exporter and "cluster_name" not in exporter
    database = re.fullmatch(r"\$\{env:(\w+):-(\w+)\}", exporter["database"])
    assert database.group(2) == DEFAULT_DATABASE
    assert collector_service["environment"][database.group(1)] == DEFAULT_DATABASE
    # The exporter's ttl only shapes tables it creates; with create_schema off it must agree with the tables.
    ttl = exporter.get("ttl", "0s")
    for table in (exporter["traces_table_name"], exporter["logs_table_name"]):
        table_ttl = re.search(r"^\s*TTL\s+(.+)$", table_ddl(table), re.MULTILINE)
        if table_ttl is None:
            assert ttl in ("0", "0s", 0), f"{table} has no TTL but the exporter sets {ttl}"
        else:
            days = int(re.search(r"INTERVAL (\d+) DAY", table_ttl.group(1)).group(1))
            assert ttl == f"{days * 24}h", f"{table} keeps {days} days, the exporter says {ttl}"


def test_exporter_reaches_clickhouse_natively_as_the_writer(exporter, collector_service):
    env = collector_service["environment"]
    for key in ("endpoint", "username", "password"):
        name = re.fullmatch(r"\$\{env:(\w+)\}", exporter[key]).group(1)
        assert name in env, f"{key} comes from {name}, which the compose file does not set"
    endpoint = env["CLICKHOUSE_ENDPOINT"]
    assert re.fullmatch(r"tcp://clickhouse:9000(\?.*)?", endpoint), endpoint
    assert env["CLICKHOUSE_WRITER_USER"] == "llmtap_writer"
    assert exporter["async_insert"] is True


def test_every_placeholder_is_set_by_the_compose_file(config, collector_service):
    env = collector_service["environment"]
    placeholders = env_placeholders(config)
    assert placeholders <= set(env), f"unset: {sorted(placeholders - set(env))}"


def test_receivers_listen_where_the_compose_file_publishes(config, collector_service):
    protocols = config["receivers"]["otlp"]["protocols"]
    listening = {
        int(protocols["grpc"]["endpoint"].rsplit(":", 1)[1]),
        int(protocols["http"]["endpoint"].rsplit(":", 1)[1]),
        int(config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]),
    }
    published = {parse_port(spec)[2] for spec in collector_service["ports"]}
    assert listening == published == {4317, 4318, 13133}
    for endpoint in (protocols["grpc"]["endpoint"], protocols["http"]["endpoint"]):
        assert endpoint.startswith("0.0.0.0:"), "inside the container, listen on every interface"
    cors = protocols["http"]["cors"]
    assert cors["allowed_origins"] and cors["allowed_headers"], "browsers send OTLP/HTTP cross-origin"


def test_bearer_auth_overlay_protects_both_protocols(config):
    overlay = load_yaml(COLLECTOR_AUTH_CONFIG)
    merged = merge_configs(config, overlay)
    assert check_collector_config(merged) == []
    authenticator = merged["receivers"]["otlp"]["protocols"]["grpc"]["auth"]["authenticator"]
    assert merged["receivers"]["otlp"]["protocols"]["http"]["auth"]["authenticator"] == authenticator
    assert authenticator.split("/")[0] == "bearertokenauth"
    assert set(config["service"]["extensions"]) < set(merged["service"]["extensions"]), (
        "lists are replaced when configs merge: the overlay must repeat the base extensions"
    )
    assert merged["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317", (
        "merge keeps the rest"
    )
    assert merged["exporters"] == config["exporters"]
    auth_env = compose_model(path=AUTH_COMPOSE_FILE)["services"]["otel-collector"]["environment"]
    assert env_placeholders(overlay) <= set(auth_env)
