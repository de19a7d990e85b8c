#!/usr/bin/env bash
# llmtap's ClickHouse initialisation, run by the clickhouse/clickhouse-server image from /docker-entrypoint-initdb.d.
# docker-compose.yml sets CLICKHOUSE_ALWAYS_RUN_INITDB_SCRIPTS=1, so it runs on every start, against a server that
# listens on 127.0.0.1 only until the script is done:
#
#   1. the database and the schema migrations: the very files `llmtap db migrate` applies (clickhouse/migrations,
#      mounted at /llmtap/migrations), in the same order, recorded in the same `llmtap_migrations` table with the
#      same checksums, so the script and `llmtap db migrate` can take turns on one server. A `git pull` that brings
#      a new migration is applied by the next `docker compose up`.
#   2. the bundled model prices (clickhouse/data/model_prices.csv, mounted at /llmtap/data), reloaded like
#      `llmtap db migrate` does, so costs show without running anything else;
#   3. the users: an INSERT-only writer for the OpenTelemetry Collector and a read-only reader for Grafana, with
#      passwords from .env. Passwords reach ClickHouse only as SHA-256 hashes; re-running applies a new password.
#
# Idempotent: recorded migrations are skipped, users and their profiles are updated in place.
# Environment: CLICKHOUSE_USER/CLICKHOUSE_PASSWORD (the administrator the image creates), LLMTAP_DATABASE,
# LLMTAP_MIGRATIONS_DIR, LLMTAP_PRICES_FILE,
# CLICKHOUSE_WRITER_USER/CLICKHOUSE_WRITER_PASSWORD, CLICKHOUSE_READER_USER/CLICKHOUSE_READER_PASSWORD.
set -euo pipefail
shopt -s nullglob

DATABASE="${LLMTAP_DATABASE:-otel}"
MIGRATIONS_DIR="${LLMTAP_MIGRATIONS_DIR:-/llmtap/migrations}"
MIGRATIONS_TABLE="llmtap_migrations"

log() { echo "llmtap-init: $*"; }
die() {
    echo "llmtap-init: error: $*" >&2
    exit 1
}

# clickhouse-client as the administrator. `client` never reads standard input (an INSERT would take it as data);
# `client_reading_input` feeds it the script's standard input.
client_reading_input() {
    clickhouse-client --host 127.0.0.1 --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" "$@"
}

client() {
    client_reading_input "$@" </dev/null
}

# Names are pasted into SQL, so anything but a plain identifier is refused.
require_identifier() {
    [[ "$2" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$1 must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*), got '$2'"
}

require_value() {
    [[ -n "$2" ]] || die "$1 is not set (copy .env.example to .env and fill it in)"
}

# The migration files in version order, into MIGRATION_FILES; a misnamed file or a version used twice stops
# everything before any statement runs (the same rules as llmtap.clickhouse.migrations.discover).
MIGRATION_FILES=()
collect_migrations() {
    local file name
    local -A versions=()
    MIGRATION_FILES=("$MIGRATIONS_DIR"/*.sql)
    [[ ${#MIGRATION_FILES[@]} -gt 0 ]] || die "no migration files in $MIGRATIONS_DIR (mount clickhouse/migrations there)"
    for file in "${MIGRATION_FILES[@]}"; do
        name="$(basename "$file")"
        [[ "$name" =~ ^([0-9]{4})_[A-Za-z0-9_]+\.sql$ ]] || die "$name: migration files must be named NNNN_<name>.sql"
        [[ -z "${versions[${BASH_REMATCH[1]}]:-}" ]] || die "$name: version ${BASH_REMATCH[1]} is used twice"
        versions[${BASH_REMATCH[1]}]=1
    done
}

apply_migrations() {
    local file name version migration checksum applied
    client --query "CREATE DATABASE IF NOT EXISTS $DATABASE"
    client --database "$DATABASE" --query "CREATE TABLE IF NOT EXISTS $MIGRATIONS_TABLE (
    Version UInt32,
    Name String,
    Checksum String,
    AppliedAt DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(AppliedAt)
ORDER BY Version"
    applied=" $(client --database "$DATABASE" --query "SELECT DISTINCT Version FROM $MIGRATIONS_TABLE" | tr '\n' ' ') "
    for file in "${MIGRATION_FILES[@]}"; do
        name="$(basename "$file")"
        [[ "$name" =~ ^([0-9]{4})_([A-Za-z0-9_]+)\.sql$ ]]
        version=$((10#${BASH_REMATCH[1]}))
        migration="${BASH_REMATCH[2]}"
        if [[ "$applied" == *" $version "* ]]; then
            log "$name already applied"
            continue
        fi
        log "applying $name to $DATABASE"
        client_reading_input --database "$DATABASE" --multiquery <"$file"
        checksum="$(sha256sum "$file" | cut -d' ' -f1)"
        client --database "$DATABASE" \
            --param_version="$version" --param_name="$migration" --param_checksum="$checksum" \
            --query "INSERT INTO $MIGRATIONS_TABLE (Version, Name, Checksum, AppliedAt)
SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3, 'UTC')"
    done
}

# The bundled model prices, as `llmtap db migrate` loads them (llmtap.clickhouse.prices): the rows of source
# 'llmtap' are replaced by the file's, `#` lines are comments, an empty cached-input price means no discount.
load_prices() {
    local prices="${LLMTAP_PRICES_FILE:-}"
    [[ -n "$prices" ]] || return 0
    log "loading model prices from $(basename "$prices")"
    client --database "$DATABASE" --query "ALTER TABLE model_prices DELETE WHERE Source = 'llmtap' SETTINGS mutations_sync = 2"
    grep -v -E '^[[:space:]]*(#|$)' "$prices" | client_reading_input --database "$DATABASE" --query "INSERT INTO model_prices
    (Model, ValidFrom, InputPerMillion, CachedInputPerMillion, OutputPerMillion, Source)
SELECT Model, ValidFrom, InputPerMillion, ifNull(CachedInputPerMillion, InputPerMillion), OutputPerMillion, 'llmtap'
FROM input('Model String, ValidFrom Date, InputPerMillion Float64, CachedInputPerMillion Nullable(Float64), OutputPerMillion Float64')
FORMAT CSVWithNames"
}

sha256_hex() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# Every setting is checked before anything reaches ClickHouse, so a typo in .env leaves nothing half-made.
check_settings() {
    require_identifier LLMTAP_DATABASE "$DATABASE"
    require_identifier CLICKHOUSE_WRITER_USER "${CLICKHOUSE_WRITER_USER:-}"
    require_identifier CLICKHOUSE_READER_USER "${CLICKHOUSE_READER_USER:-}"
    require_value CLICKHOUSE_WRITER_PASSWORD "${CLICKHOUSE_WRITER_PASSWORD:-}"
    require_value CLICKHOUSE_READER_PASSWORD "${CLICKHOUSE_READER_PASSWORD:-}"
    [[ "$CLICKHOUSE_WRITER_USER" != "$CLICKHOUSE_READER_USER" ]] ||
        die "CLICKHOUSE_WRITER_USER and CLICKHOUSE_READER_USER must differ"
    [[ -z "${LLMTAP_PRICES_FILE:-}" || -f "$LLMTAP_PRICES_FILE" ]] ||
        die "LLMTAP_PRICES_FILE=$LLMTAP_PRICES_FILE does not exist (mount clickhouse/data there)"
    collect_migrations
}

create_users() {
    local writer="$CLICKHOUSE_WRITER_USER" reader="$CLICKHOUSE_READER_USER"
    log "creating users $writer (insert) and $reader (read-only)"
    # Writer: INSERT only. Async inserts merge the inserts of several exporter consumers into few parts, and
    # wait_for_async_insert keeps an acknowledged insert durable, which the exporter's retries rely on.
    # Reader: readonly = 1, except max_execution_time, which the Grafana plugin sets on every query.
    client --multiquery --query "CREATE USER IF NOT EXISTS $writer;
ALTER USER $writer IDENTIFIED WITH sha256_hash BY '$(sha256_hex "$CLICKHOUSE_WRITER_PASSWORD")' DEFAULT DATABASE $DATABASE;
CREATE SETTINGS PROFILE OR REPLACE llmtap_writer_profile SETTINGS async_insert = 1, wait_for_async_insert = 1, async_insert_busy_timeout_max_ms = 1000, async_insert_max_data_size = 10485760 TO $writer;
GRANT INSERT, SHOW TABLES, SHOW COLUMNS ON $DATABASE.* TO $writer;
CREATE USER IF NOT EXISTS $reader;
ALTER USER $reader IDENTIFIED WITH sha256_hash BY '$(sha256_hex "$CLICKHOUSE_READER_PASSWORD")' DEFAULT DATABASE $DATABASE;
CREATE SETTINGS PROFILE OR REPLACE llmtap_reader_profile SETTINGS readonly = 1, max_execution_time = 60 MIN 1 MAX 600 CHANGEABLE_IN_READONLY TO $reader;
GRANT SELECT ON $DATABASE.* TO $reader;"
}

main() {
    check_settings
    apply_migrations
    load_prices
    create_users
    log "done"
}

main "$@"
