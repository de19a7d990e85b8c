"""Beyond one machine (docs/scaling.md): the gateway and Kafka collector configs use only documented keys and
agree with the writer tier, and the ClickHouse cluster migrations are the single-node ones, distributed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from compose_support import (
    COLLECTOR_CONFIG,
    MIGRATIONS_DIR,
    REPO,
    check_collector_config,
    load_yaml,
    merge_configs,
    migration_objects,
)
from llmtap.clickhouse.migrations import split_statements

SCALING = REPO / "collector" / "scaling"
CLUSTER = REPO / "clickhouse" / "cluster"
DOC = REPO / "docs" / "scaling.md"


def _unused_only(problems: list[str]) -> list[str]:
    """Problems other than components an overlay left defined but unused (the collector allows those)."""
    return [p for p in problems if "defined but in no pipeline" not in p]


@pytest.fixture(scope="module")
def gateway():
    return load_yaml(SCALING / "gateway.yaml")


def test_the_gateway_balances_every_signal_over_the_writers(gateway):
    assert check_collector_config(gateway) == []
    writer = load_yaml(COLLECTOR_CONFIG)
    writer_grpc_port = writer["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    keys = {
        "traces": {"traceID"},
        "logs": {"traceID"},
        "metrics": {"service", "resource", "metric", "streamID"},
    }
    for signal, pipeline in gateway["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter"
        (exporter_id,) = pipeline["exporters"]
        exporter = gateway["exporters"][exporter_id]
        assert exporter_id.split("/")[0] == "loadbalancing"
        assert exporter["routing_key"] in keys[signal], (
            f"{signal} cannot be routed by {exporter['routing_key']}"
        )
        assert exporter["resolver"]["dns"]["port"] == writer_grpc_port, "the writers' OTLP gRPC port"
        assert exporter["sending_queue"]["storage"] in gateway["service"]["extensions"]
    # The gateway accepts exactly what a single-node collector accepts, so apps need no change.
    assert gateway["receivers"]["otlp"]["protocols"].keys() == writer["receivers"]["otlp"]["protocols"].keys()
    for protocol in ("grpc", "http"):
        assert (
            gateway["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
            == writer["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
        )


def test_kafka_connects_the_gateway_and_writer_tiers(gateway):
    producer = merge_configs(gateway, load_yaml(SCALING / "gateway-kafka.yaml"))
    consumer = merge_configs(load_yaml(COLLECTOR_CONFIG), load_yaml(SCALING / "writer-kafka.yaml"))
    assert _unused_only(check_collector_config(producer)) == []
    assert check_collector_config(consumer) == []
    kafka_out, kafka_in = producer["exporters"]["kafka"], consumer["receivers"]["kafka"]
    for signal in ("traces", "metrics", "logs"):
        assert producer["service"]["pipelines"][signal]["exporters"] == ["kafka"]
        assert producer["service"]["pipelines"][signal]["processors"] == ["memory_limiter"], (
            "merge kept the rest"
        )
        assert consumer["service"]["pipelines"][signal]["receivers"] == ["otlp", "kafka"]
        assert consumer["service"]["pipelines"][signal]["exporters"] == ["clickhouse"]
        assert kafka_in[signal]["topics"] == [kafka_out[signal]["topic"]], signal
        assert kafka_in[signal]["encoding"] == kafka_out[signal]["encoding"]
    assert kafka_out["brokers"] == kafka_in["brokers"]
    assert kafka_out["partition_traces_by_id"] is True
    assert kafka_out["producer"]["required_acks"] == -1
    assert kafka_in["message_marking"] == {"after": True, "on_error": False}, "at-least-once"


def test_the_scaling_guide_names_files_that_exist():
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:collector|clickhouse|bench|tests|docs)/[\w./-]+)`", text))
    assert len(paths) >= 8
    for path in paths:
        if path.startswith("bench/"):
            continue  # benchmark outputs and scripts belong to the benchmark issues
        assert (REPO / path).exists(), f"docs/scaling.md names {path}, which does not exist"
    for config in SCALING.glob("*.yaml"):
        assert f"collector/scaling/{config.name}" in text, f"{config.name} is not documented"


# --- ClickHouse cluster migrations --------------------------------------------------------------------------------


def _cluster_statements() -> dict[str, list[str]]:
    return {
        path.name: split_statements(path.read_text(encoding="utf-8"))
        for path in sorted((CLUSTER / "migrations").glob("*.sql"))
    }


def test_committed_cluster_migrations_are_generated_from_the_single_node_ones():
    process = subprocess.run(
        [sys.executable, str(CLUSTER / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 0, process.stdout + process.stderr
    assert sorted(_cluster_statements()) == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))


def test_every_cluster_statement_runs_on_the_whole_cluster_and_replicates():
    for name, statements in _cluster_statements().items():
        for statement in statements:
            if statement.startswith("INSERT INTO "):
                continue  # a one-off backfill through the Distributed tables (see generate.convert)
            head = statement.split("(")[0].split(" AS ")[0]
            assert "ON CLUSTER '{cluster}'" in head, f"{name}: {statement.splitlines()[0]}"
            engine = re.search(r"ENGINE\s*=\s*(\w+)", statement)
            if engine:  # (Null stores nothing: its rows go to the views on the node they reach)
                assert engine.group(1) in ("Distributed", "Null") or engine.group(1).startswith(
                    "Replicated"
                ), f"{name}: {engine.group(1)} keeps data on one node"


def test_cluster_objects_cover_the_single_node_schema(generate):
    single = migration_objects()
    cluster = migration_objects(CLUSTER / "migrations")
    text = "\n".join(stmt for stmts in _cluster_statements().values() for stmt in stmts)
    for name, kind in single.items():
        assert cluster.get(name) == kind, f"{name} ({kind}) is missing from the cluster variant"
        if kind == "TABLE" and f"{name}_local" in cluster:
            distributed = re.search(
                rf"CREATE TABLE IF NOT EXISTS {name} ON CLUSTER '{{cluster}}' AS {name}_local\s+"
                rf"ENGINE = Distributed\('{{cluster}}', currentDatabase\(\), {name}_local, ",
                text,
            )
            assert distributed, f"{name} is not the Distributed table over {name}_local"
    statements = [stmt for stmts in _cluster_statements().values() for stmt in stmts]
    views = [s for s in statements if s.startswith("CREATE MATERIALIZED VIEW") or " MODIFY QUERY" in s]
    swapped = sum(
        " MODIFY QUERY" in stmt
        for path in MIGRATIONS_DIR.glob("*.sql")
        for stmt in split_statements(path.read_text())
    )
    assert len(views) == sum(kind == "MATERIALIZED VIEW" for kind in cluster.values()) + swapped
    for statement in views:
        head = statement.splitlines()[0]
        target = re.search(r" TO (\w+)", head)
        assert target is None or target.group(1).endswith("_local"), f"{head}: writes {target.group(1)}"
        # Every table a view reads is the shard's own part, or one every node holds whole.
        for source in re.findall(r"\b(?:FROM|(?<!ARRAY )JOIN) (\w+)", statement):
            assert source.endswith("_local") or source in generate.REPLICATED_WHOLE, f"{head}: reads {source}"
    assert "_local" not in "".join(k for k in single), "local tables exist only on the cluster"
    assert "/clickhouse/tables/all/{database}/model_prices" in text, "prices are replicated to every node"
    assert "otel_traces_local, cityHash64(TraceId)" in text and "llm_calls_local, cityHash64(TraceId)" in text


def test_cluster_statements_parse_as_clickhouse_sql(tmp_path):
    # chDB has no cluster, so the statements are parsed (formatQuery), not run; in a child process because chDB
    # holds one data directory per process.
    statements = [s for stmts in _cluster_statements().values() for s in stmts]
    script = (
        "import json, sys; from llmtap.clickhouse.connection import connect\n"
        f"client = connect('chdb://{tmp_path / 'chdb'}')\n"
        "out = []\n"
        "for s in json.load(sys.stdin):\n"
        "    try: client.query('SELECT formatQuery({q:String})', parameters={'q': s}); out.append('')\n"
        "    except Exception as e: out.append(str(e)[:300])\n"
        "print(json.dumps(out))\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    errors = [
        (s.splitlines()[0], e) for s, e in zip(statements, json.loads(process.stdout), strict=True) if e
    ]
    assert errors == []


@pytest.fixture(scope="module")
def generate():
    """clickhouse/cluster/generate.py, a script rather than a package module."""
    sys.path.insert(0, str(CLUSTER))
    try:
        import generate
    finally:
        sys.path.remove(str(CLUSTER))
    return generate


def test_the_generator_refuses_statements_it_cannot_distribute(generate, tmp_path):
    (tmp_path / "0001_alter.sql").write_text("ALTER TABLE otel_traces ADD COLUMN IF NOT EXISTS X UInt8;\n")
    with pytest.raises(
        generate.GenerateError, match=re.escape("0001_alter.sql: cannot derive a cluster statement")
    ):
        generate.generate(tmp_path)
    (tmp_path / "0001_alter.sql").write_text("CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Memory;\n")
    with pytest.raises(generate.GenerateError, match="no \\*MergeTree engine"):
        generate.generate(tmp_path)


def test_the_generator_alters_a_sharded_tables_storage_on_its_local_table_only(generate, tmp_path):
    create = "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
    (tmp_path / "0001_t.sql").write_text(
        create + "ALTER TABLE t ADD PROJECTION IF NOT EXISTS p (SELECT * ORDER BY x);\n"
        "ALTER TABLE t MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', min_bytes_for_wide_part = 0;\n"
    )
    text = generate.generate(tmp_path)["0001_t.sql"]
    assert "ALTER TABLE t_local ON CLUSTER '{cluster}' ADD PROJECTION IF NOT EXISTS p" in text
    assert (
        "ALTER TABLE t_local ON CLUSTER '{cluster}' MODIFY SETTING" in text
        and "min_bytes_for_wide_part" in text
    )
    # A comma in a quoted value (after an escaped quote) is no second action.
    (tmp_path / "0001_t.sql").write_text(
        create + "ALTER TABLE t MODIFY SETTING storage_policy = 'it\\'s, ADD COLUMN y';\n"
    )
    assert "ALTER TABLE t_local ON CLUSTER" in generate.generate(tmp_path)["0001_t.sql"]
    for alter in (
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS y UInt8;",
        "ALTER TABLE t ADD PROJECTION q (SELECT x, count() GROUP BY x), ADD COLUMN y UInt8;",
    ):
        (tmp_path / "0001_t.sql").write_text(create + alter + "\n")
        with pytest.raises(generate.GenerateError, match="cannot derive a cluster statement"):
            generate.generate(tmp_path)


def test_the_generator_keeps_a_null_table_and_a_views_new_query_on_each_shard(generate, tmp_path):
    (tmp_path / "0001_t.sql").write_text(
        "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "CREATE TABLE IF NOT EXISTS passing (x UInt8) ENGINE = Null;\n"
        "CREATE TABLE IF NOT EXISTS total (x UInt64) ENGINE = MergeTree ORDER BY x;\n"
        "CREATE MATERIALIZED VIEW IF NOT EXISTS pass_mv TO passing AS SELECT x FROM t;\n"
        "CREATE MATERIALIZED VIEW IF NOT EXISTS total_mv TO total AS SELECT sum(x) AS x FROM t;\n"
        "ALTER TABLE total_mv MODIFY QUERY SELECT sum(x) AS x FROM passing;\n"
    )
    text = generate.generate(tmp_path)["0001_t.sql"]
    assert "CREATE TABLE IF NOT EXISTS passing_local ON CLUSTER '{cluster}' (x UInt8) ENGINE = Null;" in text
    assert "ENGINE = Distributed('{cluster}', currentDatabase(), passing_local, rand());" in text
    assert "pass_mv ON CLUSTER '{cluster}' TO passing_local AS SELECT x FROM t_local;" in text
    assert (
        "ALTER TABLE total_mv ON CLUSTER '{cluster}' MODIFY QUERY SELECT sum(x) AS x FROM passing_local;"
        in text
    )
    # Only a view's query can be swapped: a table has none.
    (tmp_path / "0001_t.sql").write_text(
        "CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "ALTER TABLE t MODIFY QUERY SELECT 1;\n"
    )
    with pytest.raises(generate.GenerateError, match="cannot derive a cluster statement"):
        generate.generate(tmp_path)
