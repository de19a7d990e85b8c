-- llm_calls_1d: the same aggregates as llm_calls_1h per day, for totals over long ranges. A month of the hourly
-- rollup is still a hundred thousand latency digests to merge for one "p95 over 30 days" number; per day it is
-- 24 times fewer. Dashboards read whole days of a range from here, the hours and minutes at its edges from the
-- finer rollups (llmtap.grafana.aggregate). Same columns, reading rules and ORDER BY reasoning as llm_calls_1m
-- (see 0004); Day (the start of the server's day) replaces Minute.
CREATE TABLE IF NOT EXISTS llm_calls_1d
(
    Day DateTime CODEC(Delta(4), ZSTD(1)),
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
PARTITION BY toYYYYMM(Day)
ORDER BY (Project, ServiceName, Model, Day, Provider, Operation, IsError, ErrorType)
TTL Day + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Days stored before this migration: folded in once from the hourly rollup, while the table is still empty.
INSERT INTO llm_calls_1d
SELECT
    toStartOfDay(Hour) AS Day, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType,
    sum(Calls), sum(Errors), sum(StreamCalls), sum(InputTokens), sum(OutputTokens), sum(CachedTokens),
    sum(ReasoningTokens), sum(DurationMsSum), min(DurationMsMin), max(DurationMsMax),
    quantileTDigestMergeState(DurationMsQuantiles),
    quantileTDigestIfMergeState(TimeToFirstChunkMsQuantiles)
FROM llm_calls_1h
WHERE (SELECT count() FROM llm_calls_1d) = 0
GROUP BY Day, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType;

-- Chained after llm_calls_1h_mv: each block of hours is folded into its days (digests merged, not recomputed).
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_1d_mv TO llm_calls_1d AS
SELECT
    toStartOfDay(Hour) AS Day,
    Project,
    ServiceName,
    Model,
    Provider,
    Operation,
    IsError,
    ErrorType,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    sum(StreamCalls) AS StreamCalls,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CachedTokens) AS CachedTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(DurationMsSum) AS DurationMsSum,
    min(DurationMsMin) AS DurationMsMin,
    max(DurationMsMax) AS DurationMsMax,
    quantileTDigestMergeState(DurationMsQuantiles) AS DurationMsQuantiles,
    quantileTDigestIfMergeState(TimeToFirstChunkMsQuantiles) AS TimeToFirstChunkMsQuantiles
FROM llm_calls_1h
GROUP BY Day, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType;

-- llm_calls_1d_costed: the daily rollup plus Cost per row, priced like llm_calls_1m_costed (see 0005).
CREATE VIEW IF NOT EXISTS llm_calls_1d_costed AS
SELECT
    r.*,
    p.Model AS PriceModel,
    if(p.Model = '', NULL,
       ((r.InputTokens - least(r.CachedTokens, r.InputTokens)) * p.InputPerMillion
        + least(r.CachedTokens, r.InputTokens) * p.CachedInputPerMillion
        + r.OutputTokens * p.OutputPerMillion) / 1e6) AS Cost
FROM llm_calls_1d AS r
LEFT ASOF JOIN model_prices_effective AS p
    ON if(r.Model IN (SELECT Model FROM model_prices),
          r.Model, replaceRegexpOne(r.Model, '-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4})$', '')) = p.Model
    AND toDate(r.Day) >= p.ValidFrom;
