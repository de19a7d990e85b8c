-- llm_calls: one typed row per LLM call, fed from the exporter's otel_traces by llm_calls_mv.
--
-- otel_traces keeps every span attribute as a string in one Map, so reading a single key decodes the whole
-- map of every row. Here each value a user filters or aggregates by is its own typed column, and the content
-- (prompt, response, system instructions) sits in ZSTD(3) columns that a dashboard query never touches.
--
-- PARTITION BY toDate(Timestamp): the same daily partitions as otel_traces. Every query carries a time range,
-- which prunes whole days before reading anything, and the row TTL drops whole expired days
-- (ttl_only_drop_parts) instead of rewriting parts.
-- ORDER BY (Project, toStartOfHour(Timestamp), ServiceName, Model, Timestamp): charts read the rollups, so this
-- table serves the reads of single calls: the newest calls (explorer, latest failures, `llmtap logs`), one
-- call by id, searches. Project (the team or app sharing the store) comes first, since every view can filter
-- by it. The hour comes next, so a project's newest calls lie in the last hour's few granules, whatever the
-- number of services and models: ordered by service and model before time, they were spread over one granule
-- per service and model in the day, and reading the content of those granules made the explorer's 500 newest
-- calls on 10M calls take 330-410 ms, 150-180 ms in this order (same disk size). Service and model inside the
-- hour still let the primary index skip other services' granules where an hour has many, and keep
-- low-cardinality values together, which compresses well. Lookups by id, user, session, tag or custom
-- attribute go through the skipping indexes below. Stores made with the earlier order are re-sorted by
-- `llmtap db migrate` (see clickhouse/resort.py).
CREATE TABLE IF NOT EXISTS llm_calls
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    RequestModel LowCardinality(String) CODEC(ZSTD(1)),
    ResponseModel LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    ResponseId String CODEC(ZSTD(1)),
    ServerAddress LowCardinality(String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    DurationMs Float64 ALIAS Duration / 1e6,
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    IsError UInt8 CODEC(T64, ZSTD(1)),
    ErrorType LowCardinality(String) CODEC(ZSTD(1)),
    InputTokens UInt64 CODEC(T64, ZSTD(1)),
    OutputTokens UInt64 CODEC(T64, ZSTD(1)),
    CachedTokens UInt64 CODEC(T64, ZSTD(1)),
    ReasoningTokens UInt64 CODEC(T64, ZSTD(1)),
    FinishReasons Array(String) CODEC(ZSTD(1)),
    IsStream UInt8 CODEC(T64, ZSTD(1)),
    TimeToFirstChunkMs Nullable(Float64) CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    SessionId String CODEC(ZSTD(1)),
    Tags Array(String) CODEC(ZSTD(1)),
    PromptHash String CODEC(ZSTD(1)),
    RedactionCount UInt32 CODEC(T64, ZSTD(1)),
    ContentTruncated UInt8 CODEC(T64, ZSTD(1)),
    Attributes Map(String, String) CODEC(ZSTD(1)),
    Metadata Map(String, String) CODEC(ZSTD(1)),
    -- Content columns: their own, shorter TTL (see `llmtap db retention`), so prompts expire and charts stay.
    InputMessages String TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(3)),
    OutputMessages String TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(3)),
    SystemInstructions String TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(3)),
    ToolDefinitions String TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(3)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_id SpanId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id UserId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_session_id SessionId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_tags Tags TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Project, toStartOfHour(Timestamp), ServiceName, Model, Timestamp)
TTL toDateTime(Timestamp) + INTERVAL 400 DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- llm_calls_mv: GenAI spans of otel_traces -> llm_calls, on every insert (the exporter's and `llmtap serve`'s).
-- A GenAI span is one with gen_ai.operation.name (current semconv) or gen_ai.system (older instrumentations);
-- agent and tool spans (invoke_agent, create_agent, execute_tool) are left out, since the model calls under
-- them are spans of their own and counting both would double the calls and tokens.
-- The exporter stringifies every attribute: numbers arrive as decimal strings, booleans as 'true'/'false',
-- arrays as JSON array strings (a lone string is taken as a one-element array). Older attribute names (gen_ai.system, gen_ai.usage.prompt_tokens/
-- completion_tokens) are read as fallbacks so spans from older instrumentations chart too.
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_mv TO llm_calls AS
SELECT
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ResourceAttributes['service.namespace'] AS Project,
    ServiceName,
    SpanName,
    SpanAttributes['gen_ai.operation.name'] AS Operation,
    if(SpanAttributes['gen_ai.provider.name'] != '', SpanAttributes['gen_ai.provider.name'],
       SpanAttributes['gen_ai.system']) AS Provider,
    SpanAttributes['gen_ai.request.model'] AS RequestModel,
    SpanAttributes['gen_ai.response.model'] AS ResponseModel,
    if(ResponseModel != '', ResponseModel, RequestModel) AS Model,
    SpanAttributes['gen_ai.response.id'] AS ResponseId,
    SpanAttributes['server.address'] AS ServerAddress,
    Duration,
    StatusCode,
    StatusMessage,
    toUInt8(StatusCode IN ('Error', 'STATUS_CODE_ERROR')) AS IsError,
    SpanAttributes['error.type'] AS ErrorType,
    toUInt64OrZero(if(mapContains(SpanAttributes, 'gen_ai.usage.input_tokens'),
        SpanAttributes['gen_ai.usage.input_tokens'], SpanAttributes['gen_ai.usage.prompt_tokens'])) AS InputTokens,
    toUInt64OrZero(if(mapContains(SpanAttributes, 'gen_ai.usage.output_tokens'),
        SpanAttributes['gen_ai.usage.output_tokens'], SpanAttributes['gen_ai.usage.completion_tokens'])) AS OutputTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.cache_read.input_tokens']) AS CachedTokens,
    toUInt64OrZero(SpanAttributes['gen_ai.usage.reasoning.output_tokens']) AS ReasoningTokens,
    if(startsWith(SpanAttributes['gen_ai.response.finish_reasons'], '['),
       JSONExtract(SpanAttributes['gen_ai.response.finish_reasons'], 'Array(String)'),
       arrayFilter(x -> x != '', [SpanAttributes['gen_ai.response.finish_reasons']])) AS FinishReasons,
    toUInt8(SpanAttributes['gen_ai.request.stream'] = 'true') AS IsStream,
    toFloat64OrNull(SpanAttributes['gen_ai.response.time_to_first_chunk']) * 1000 AS TimeToFirstChunkMs,
    SpanAttributes['user.id'] AS UserId,
    SpanAttributes['session.id'] AS SessionId,
    if(startsWith(SpanAttributes['llmtap.tags'], '['),
       JSONExtract(SpanAttributes['llmtap.tags'], 'Array(String)'),
       arrayFilter(x -> x != '', [SpanAttributes['llmtap.tags']])) AS Tags,
    SpanAttributes['llmtap.prompt.hash'] AS PromptHash,
    toUInt32OrZero(SpanAttributes['llmtap.redaction.count']) AS RedactionCount,
    toUInt8(SpanAttributes['llmtap.content.truncated'] = 'true') AS ContentTruncated,
    CAST(mapApply((k, v) -> (substring(k, 13), v), mapFilter((k, v) -> startsWith(k, 'llmtap.attr.'), SpanAttributes))
        AS Map(String, String)) AS Attributes,
    CAST(mapApply((k, v) -> (substring(k, 17), v), mapFilter((k, v) -> startsWith(k, 'llmtap.metadata.'), SpanAttributes))
        AS Map(String, String)) AS Metadata,
    SpanAttributes['gen_ai.input.messages'] AS InputMessages,
    SpanAttributes['gen_ai.output.messages'] AS OutputMessages,
    SpanAttributes['gen_ai.system_instructions'] AS SystemInstructions,
    SpanAttributes['gen_ai.tool.definitions'] AS ToolDefinitions
FROM otel_traces
WHERE (mapContains(SpanAttributes, 'gen_ai.operation.name') OR mapContains(SpanAttributes, 'gen_ai.system'))
    AND SpanAttributes['gen_ai.operation.name'] NOT IN ('invoke_agent', 'create_agent', 'execute_tool');
