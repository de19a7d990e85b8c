-- llm_calls_1m: per-minute aggregates of llm_calls, so a 30-day chart reads thousands of rows, not millions.
--
-- Counters and sums are SimpleAggregateFunction columns: readable as plain numbers (always re-aggregate with
-- sum()/min()/max() and GROUP BY, since rows of one key merge in the background). Latency and time to first
-- chunk are t-digest states: read them with quantileTDigestMerge(0.95)(DurationMsQuantiles), or
-- quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(…) for several levels at once; the TTFC state is an -If state
-- over streamed calls only: quantileTDigestIfMerge(0.5)(TimeToFirstChunkMsQuantiles).
-- Cost is not stored: tokens are kept per model, so `llm_calls_1m_costed` prices them at query time and a
-- price fix re-costs history here too.
--
-- PARTITION BY toYYYYMM(Minute): a month holds a few hundred thousand rollup rows at most, so monthly parts
-- keep the part count low for long ranges; the row TTL drops a month once all of it has expired.
-- ORDER BY: the dimensions dashboards filter by, in the same order as llm_calls (project, service, model),
-- then the minute, then the remaining dimensions; together they are the aggregation key.
CREATE TABLE IF NOT EXISTS llm_calls_1m
(
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    ErrorType LowCardinality(String) CODEC(ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    StreamCalls SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CachedTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    DurationMsSum SimpleAggregateFunction(sum, Float64),
    DurationMsMin SimpleAggregateFunction(min, Float64),
    DurationMsMax SimpleAggregateFunction(max, Float64),
    DurationMsQuantiles AggregateFunction(quantileTDigest, Float64),
    TimeToFirstChunkMsQuantiles AggregateFunction(quantileTDigestIf, Float64, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (Project, ServiceName, Model, Minute, Provider, Operation, IsError, ErrorType)
TTL Minute + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Chained after llm_calls_mv: each block inserted into llm_calls is folded into the rollup.
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_1m_mv TO llm_calls_1m AS
SELECT
    toStartOfMinute(Timestamp) AS Minute,
    Project,
    ServiceName,
    Model,
    Provider,
    Operation,
    IsError,
    ErrorType,
    count() AS Calls,
    sum(IsError) AS Errors,
    sum(IsStream) AS StreamCalls,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CachedTokens) AS CachedTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(Duration / 1e6) AS DurationMsSum,
    min(Duration / 1e6) AS DurationMsMin,
    max(Duration / 1e6) AS DurationMsMax,
    quantileTDigestState(Duration / 1e6) AS DurationMsQuantiles,
    quantileTDigestIfState(ifNull(TimeToFirstChunkMs, 0), isNotNull(TimeToFirstChunkMs)) AS TimeToFirstChunkMsQuantiles
FROM llm_calls
GROUP BY Minute, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType;
