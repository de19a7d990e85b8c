-- llm_calls_1h: the same aggregates as llm_calls_1m per hour, for long ranges. A busy store has hundreds of
-- (project, service, model, status) series active in a minute, so 30 days of the minute rollup can still be
-- millions of rows; per hour it is 60 times fewer. Charts use it when their step is an hour or more
-- (`llmtap.clickhouse.queries.call_timeseries` does), the minute rollup below that.
-- Same columns, reading rules and ORDER BY reasoning as llm_calls_1m (see 0004); Hour replaces Minute.
CREATE TABLE IF NOT EXISTS llm_calls_1h
(
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
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
PARTITION BY toYYYYMM(Hour)
ORDER BY (Project, ServiceName, Model, Hour, Provider, Operation, IsError, ErrorType)
TTL Hour + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Calls stored before this migration: folded in once, while the table is still empty (so a re-run adds nothing).
INSERT INTO llm_calls_1h
SELECT
    toStartOfHour(Timestamp) AS Hour, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType,
    count(), sum(IsError), sum(IsStream), sum(InputTokens), sum(OutputTokens), sum(CachedTokens),
    sum(ReasoningTokens), sum(Duration / 1e6), min(Duration / 1e6), max(Duration / 1e6),
    quantileTDigestState(Duration / 1e6),
    quantileTDigestIfState(ifNull(TimeToFirstChunkMs, 0), isNotNull(TimeToFirstChunkMs))
FROM llm_calls
WHERE (SELECT count() FROM llm_calls_1h) = 0
GROUP BY Hour, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_1h_mv TO llm_calls_1h AS
SELECT
    toStartOfHour(Timestamp) AS Hour,
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
GROUP BY Hour, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType;

-- llm_calls_1h_costed: the hourly rollup plus Cost per row, priced like llm_calls_1m_costed (see 0005).
CREATE VIEW IF NOT EXISTS llm_calls_1h_costed AS
SELECT
    r.*,
    p.Model AS PriceModel,
    if(p.Model = '', NULL,
       ((r.InputTokens - least(r.CachedTokens, r.InputTokens)) * p.InputPerMillion
        + least(r.CachedTokens, r.InputTokens) * p.CachedInputPerMillion
        + r.OutputTokens * p.OutputPerMillion) / 1e6) AS Cost
FROM llm_calls_1h AS r
LEFT ASOF JOIN model_prices_effective AS p
    ON if(r.Model IN (SELECT Model FROM model_prices),
          r.Model, replaceRegexpOne(r.Model, '-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4})$', '')) = p.Model
    AND toDate(r.Hour) >= p.ValidFrom;
