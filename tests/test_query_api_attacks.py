"""Attacks on serve's query API (issue 18, items 1 and 6): each escape from "read the store" fails, web pages are
kept out, and the limits hold whatever the query says. Before the fix, `file()`, `url()`, INTO OUTFILE,
INSERT INTO FUNCTION, several statements, KILL QUERY, SETTINGS and a text/plain POST from any page all ran."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from collector_support import post, running_collector, settle
from llmtap.collector import query_api
from test_collector_receivers import good_span, span_request


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("query-attacks")) as running:
        yield running


def ask(collector, sql: str, content_type: str = "application/json", **fields) -> tuple[int, dict, str]:
    headers = fields.pop("headers", None)
    status, answer_headers, answer = post(
        collector.http_url + "/api/query",
        json.dumps({"query": sql, **fields}).encode(),
        content_type,
        headers,
    )
    return status, answer_headers, answer.decode(errors="replace")


def refused(collector, sql: str, status: int = 400, **fields) -> str:
    got, _, answer = ask(collector, sql, **fields)
    assert got == status, (sql, got, answer)
    return json.loads(answer)["error"]


def test_files_cannot_be_read(collector, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("the-secret-value")
    for sql in (
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT file('{secret}')",
        f"SELECT 1 FROM otel_traces WHERE SpanName IN (SELECT * FROM file('{secret}', 'LineAsString'))",
        f"SELECT * FROM otel_traces AS t JOIN file('{secret}', 'LineAsString') AS f ON 1",
    ):
        assert "the-secret-value" not in refused(collector, sql)


def test_files_cannot_be_written(collector, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("before\n")
    created = tmp_path / "created.txt"
    for sql in (
        f"SELECT 'chosen text' INTO OUTFILE '{created}'",
        f"SELECT 'chosen text' INTO OUTFILE '{existing}' APPEND",
        f"SELECT 'chosen text' INTO OUTFILE '{existing}' TRUNCATE FORMAT RawBLOB",
        f"INSERT INTO FUNCTION file('{created}', 'LineAsString') SELECT 'chosen text'",
    ):
        refused(collector, sql)
    assert not created.exists() and existing.read_text() == "before\n"


@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM url('{url}', 'LineAsString')",
        "INSERT INTO FUNCTION url('{url}', 'LineAsString') SELECT 'posted'",
        "SELECT * FROM otel_traces WHERE SpanName IN (SELECT * FROM url('{url}', 'LineAsString'))",
    ],
)
def test_no_request_reaches_a_local_port(collector, template):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        refused(collector, template.format(url=f"http://127.0.0.1:{listener.getsockname()[1]}/x"))
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()


@pytest.mark.parametrize(
    ("sql", "because"),
    [
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT 1; KILL QUERY WHERE 1", "one statement"),
        ("KILL QUERY WHERE 1 SYNC", "runs one SELECT"),
        ("SYSTEM STOP MERGES", "runs one SELECT"),
        ("SET readonly = 0", "runs one SELECT"),
        ("SHOW TABLES", "runs one SELECT"),
        ("EXPLAIN SELECT 1", "not allowed"),
        ("SELECT 1 FORMAT CSV", "runs one SELECT"),
        ("SELECT * FROM numbers(10)", "table functions"),
        ("SELECT * FROM system.processes", "outside the store"),
        ("SELECT * FROM system.users", "outside the store"),
        ("SELECT 1 FROM otel_traces WHERE SpanName IN system.query_log", "outside the store"),
        ("SELECT * FROM default.anything", "outside the store"),
    ],
)
def test_only_one_select_over_the_store_runs(collector, sql, because):
    assert because in refused(collector, sql)


def test_other_databases_stay_closed(collector):
    from llmtap.clickhouse.connection import connect

    client = connect(collector.config.dsn)
    try:
        client.command("CREATE DATABASE IF NOT EXISTS secrets")
        client.command("CREATE TABLE IF NOT EXISTS secrets.keys (k String) ENGINE = MergeTree ORDER BY k")
        client.command("INSERT INTO secrets.keys VALUES ('TOPSECRET')")
    finally:
        client.close()
    for sql in (
        "SELECT * FROM secrets.keys",
        "SELECT 1 AS hit WHERE 'TOPSECRET' IN secrets.keys",
        "SELECT 1 AS hit WHERE 'TOPSECRET' IN `secrets`.`keys`",
    ):
        assert "outside the store" in refused(collector, sql)


def test_parameters_are_only_ever_bound_values(collector):
    sneaked = {"a": " , (SELECT count() FROM otel_traces) AS n, "}
    status, _, answer = ask(collector, "SELECT '%(a)s' AS s", parameters=sneaked)
    assert status == 200 and json.loads(answer) == {"s": "%(a)s"}
    status, _, answer = ask(collector, "SELECT {a:String} AS s", parameters=sneaked)
    assert status == 200 and json.loads(answer) == {"s": sneaked["a"]}
    assert "a" in refused(collector, "SELECT {a:UInt8} AS s")  # ClickHouse's own message: no value for a


def test_a_query_that_fails_part_way_leaves_the_next_one_whole(collector):
    failing = (
        "SELECT if(number < 150000, 'a', toString(throwIf(number = 150000))) AS s "
        "FROM (SELECT arrayJoin(range(200000)) AS number)"
    )
    for fmt in ("ArrowStream", "CSVWithNames"):
        for _ in range(query_api.SESSIONS + 1):
            refused(collector, failing, format=fmt)
            status, _, answer = ask(collector, "SELECT 5 AS n")
            assert status == 200 and json.loads(answer) == {"n": 5}, answer


def test_the_limits_cannot_be_lifted(collector):
    assert "SETTINGS" in refused(collector, "SELECT 1 SETTINGS max_execution_time = 0")
    assert "SETTINGS" in refused(collector, "SELECT * FROM (SELECT 1 SETTINGS max_memory_usage = 0)")
    assert "max_execution_time" in refused(collector, "SELECT 1", settings={"max_execution_time": 0})
    status, _, answer = ask(
        collector, "SELECT getSetting('max_execution_time') AS t, getSetting('max_memory_usage') AS m"
    )
    assert status == 200 and json.loads(answer) == {"t": 120, "m": query_api.PROFILE["max_memory_usage"]}
    assert "MEMORY_LIMIT_EXCEEDED" in refused(collector, "SELECT length(range(toUInt64(400000000)))")


def test_the_writer_keeps_writing_after_kill_attempts(collector):
    for _ in range(3):
        refused(collector, "KILL QUERY WHERE query ILIKE '%INSERT%'")
    post(collector.http_url + "/v1/traces", span_request(good_span("after-kill"), service="kill"))
    settle(collector)
    status, _, answer = ask(collector, "SELECT count() AS n FROM otel_traces WHERE ServiceName = 'kill'")
    assert status == 200 and json.loads(answer) == {"n": 1}
    assert collector.health()["status"] == "ok"


def test_a_long_query_does_not_hold_up_the_others(collector, monkeypatch):
    slow = threading.Thread(target=ask, args=(collector, "SELECT sleep(3)"))
    slow.start()
    status, _, answer = ask(collector, "SELECT 7 AS n")
    assert status == 200 and json.loads(answer) == {"n": 7} and slow.is_alive()
    slow.join()
    monkeypatch.setattr(query_api, "WAIT_SECONDS", 0.2)
    sleepers = [
        threading.Thread(target=ask, args=(collector, "SELECT sleep(3)")) for _ in range(query_api.SESSIONS)
    ]
    for sleeper in sleepers:
        sleeper.start()
    deadline = time.monotonic() + 2
    while collector._query_api._free._value and time.monotonic() < deadline:  # until both sessions are taken
        time.sleep(0.01)
    status, headers, answer = ask(collector, "SELECT 1")
    assert status == 503 and headers["Retry-After"] == "5" and "retry later" in json.loads(answer)["error"]
    for sleeper in sleepers:
        sleeper.join()


def test_closing_waits_for_the_running_query_and_closes_its_session(collector):
    from llmtap.clickhouse.connection import connect

    opened = []

    def session():
        opened.append(connect(collector.config.dsn, settings=dict(query_api.PROFILE)))
        return opened[-1]

    api = query_api.QueryAPI(session, "otel")
    answers = []
    running = threading.Thread(
        target=lambda: answers.append(api.handle(b'{"query": "SELECT sleep(1) AS s"}'))
    )
    running.start()
    while not opened:
        time.sleep(0.01)
    api.close()
    assert not running.is_alive() and answers and answers[0][0] == b'{"s":0}\n'
    with pytest.raises(query_api.QueryBusy, match="stopping"):
        api.handle(b'{"query": "SELECT 1"}')
    with pytest.raises(Exception, match=r"(?i)closed"):
        opened[0].query("SELECT 1")


@pytest.mark.parametrize(
    ("content_type", "headers", "status"),
    [
        ("text/plain", {}, 415),  # a CORS "simple request": sent by any page without a preflight
        ("application/x-www-form-urlencoded", {}, 415),
        ("application/json", {"Origin": "https://evil.example"}, 403),
        ("application/json", {"Origin": "null"}, 403),
        ("application/json", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("application/json", {"Sec-Fetch-Site": "same-site"}, 403),
        (
            "application/json",
            {"Host": "rebound.evil.example:4318"},
            403,
        ),  # DNS rebinding: same origin to the browser
    ],
)
def test_web_pages_are_kept_out(collector, content_type, headers, status):
    refused(collector, "SELECT 1", status, content_type=content_type, headers=headers)


def test_serves_own_origin_and_the_cli_are_answered(collector):
    port = collector.http_port
    for headers in (
        {},
        {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
        {"Host": f"localhost:{port}"},
    ):
        status, _, answer = ask(collector, "SELECT 1 AS one", headers=headers)
        assert status == 200 and json.loads(answer) == {"one": 1}, (headers, answer)
