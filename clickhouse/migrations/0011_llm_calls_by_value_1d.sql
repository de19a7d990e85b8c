-- llm_calls_by_value_1d: daily aggregates per user, per tag and per custom attribute value, for the questions the
-- other rollups cannot answer: "top users by tokens this month", "what did tenant-42 cost", a dashboard with one
-- user or tag chosen. Without it each of them reads a month of llm_calls (every call's user or attribute map:
-- 0.4-1.2 s on 10 million calls), since llm_calls is sorted for the newest calls, not by user.
--
-- Each call is counted once under each of its values: Dimension 'user' (Value: user.id, '' for calls without
-- one, so a ranking of users shows them as the other views do), 'tag' (one row per distinct tag) and
-- 'attr.<key>' (one per custom attribute, llmtap.attr.<key>). Sum the rows of one Dimension only, and over
-- several values only where a call has one value at most (users, one attribute key): a call with two of the
-- tags chosen would count twice.
-- Size: a row per (value, day, service, model, status) with calls, so it grows with the number of distinct
-- values a day; an attribute holding a new value per call (a request id) adds a row per call. Such values
-- belong in metadata (llmtap.metadata.<key>, the OpenAI metadata= argument), which is not rolled up.
--
-- Same measures and reading rules as llm_calls_1d (see 0004), less the streaming counters. Cost is not stored:
-- the tokens are kept per model and day, so the query layer prices them with model_prices at query time.
-- PARTITION BY toYYYYMM(Day), as the other rollups. ORDER BY: project, then the dimension and value, so one
-- user's or tenant's month lies in a few granules and a ranking of all users reads one dimension's range, then
-- the day, then the rest of the aggregation key.
-- Projection per_day: the counts and token sums per value and day alone, which ClickHouse reads instead of the
-- table for a ranking ("top users by calls or tokens"), about ten times fewer rows (10M calls: 4.5M rows per
-- user, service, model and day; 456k per user and day): 175 -> 20 ms for the 50 busiest users of a month.
-- 'rebuild': ClickHouse rebuilds it when parts merge, as for the rollups' projections (see 0010).
CREATE TABLE IF NOT EXISTS llm_calls_by_value_1d
(
    Day DateTime CODEC(Delta(4), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    Dimension LowCardinality(String) CODEC(ZSTD(1)),
    Value String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Provider LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    ErrorType LowCardinality(String) CODEC(ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CachedTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    DurationMsSum SimpleAggregateFunction(sum, Float64),
    DurationMsMin SimpleAggregateFunction(min, Float64),
    DurationMsMax SimpleAggregateFunction(max, Float64),
    DurationMsQuantiles AggregateFunction(quantileTDigest, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Day)
ORDER BY (Project, Dimension, Value, Day, ServiceName, Model, Provider, Operation, IsError, ErrorType)
TTL Day + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1, deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE llm_calls_by_value_1d ADD PROJECTION IF NOT EXISTS per_day (
    SELECT Project, Dimension, Value, Day, sum(Calls), sum(Errors), sum(InputTokens), sum(OutputTokens)
    GROUP BY Project, Dimension, Value, Day
);

-- Calls stored before this migration: folded in once, while the table is still empty (so a re-run adds nothing).
-- The aggregation spills to disk past 1 GB, so a large store's backfill does not run out of memory.
INSERT INTO llm_calls_by_value_1d
SELECT
    toStartOfDay(Timestamp) AS Day, Project, Pair.1 AS Dimension, Pair.2 AS Value, ServiceName, Model, Provider,
    Operation, IsError, ErrorType,
    count(), sum(IsError), sum(InputTokens), sum(OutputTokens), sum(CachedTokens), sum(ReasoningTokens),
    sum(Duration / 1e6), min(Duration / 1e6), max(Duration / 1e6), quantileTDigestState(Duration / 1e6)
FROM llm_calls
ARRAY JOIN arrayConcat(
    [('user', UserId)],
    arrayMap(tag -> ('tag', tag), arrayDistinct(Tags)),
    arrayMap((key, value) -> (concat('attr.', key), value), mapKeys(Attributes), mapValues(Attributes))
) AS Pair
WHERE (SELECT count() FROM llm_calls_by_value_1d) = 0
GROUP BY Day, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType
SETTINGS max_bytes_before_external_group_by = 1000000000;

-- Chained after llm_calls_mv: each block of calls is folded into its days, once under each of its values.
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_by_value_1d_mv TO llm_calls_by_value_1d AS
SELECT
    toStartOfDay(Timestamp) AS Day,
    Project,
    Pair.1 AS Dimension,
    Pair.2 AS Value,
    ServiceName,
    Model,
    Provider,
    Operation,
    IsError,
    ErrorType,
    count() AS Calls,
    sum(IsError) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CachedTokens) AS CachedTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(Duration / 1e6) AS DurationMsSum,
    min(Duration / 1e6) AS DurationMsMin,
    max(Duration / 1e6) AS DurationMsMax,
    quantileTDigestState(Duration / 1e6) AS DurationMsQuantiles
FROM llm_calls
ARRAY JOIN arrayConcat(
    [('user', UserId)],
    arrayMap(tag -> ('tag', tag), arrayDistinct(Tags)),
    arrayMap((key, value) -> (concat('attr.', key), value), mapKeys(Attributes), mapValues(Attributes))
) AS Pair
GROUP BY Day, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType;
