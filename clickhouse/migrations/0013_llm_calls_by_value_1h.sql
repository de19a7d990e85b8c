-- llm_calls_by_value_1h: hourly aggregates per tag, for dashboard charts over time with one tag chosen.
--
-- llm_calls_by_value_1d (0011) serves totals and whole-day buckets. A chart's buckets over a month are hours, and
-- a tag is in no sort order of llm_calls (it is one of an array), so each such chart read the whole month's tags:
-- 0.5-1.0 s over 30 days on 10 million calls. Tags are few (a release, an experiment, a feature), so their
-- hours are few rows: 10M calls under two tags make about 240k. Users are not kept here: a user's hours are
-- about as many rows as calls (8.4M for 10M calls), and migration 0012's projection reads one user's calls
-- directly.
--
-- The columns are those of llm_calls_1h (0006) under (Dimension, Value) as in llm_calls_by_value_1d, Dimension
-- always 'tag' (one row per distinct tag of a call), plus Uncertain: of the answer operations, the calls whose
-- response holds one of the phrases of llm_uncertain_phrases (at insert time, as llm_answers_1m counts them),
-- so the uncertain-answers chart with a tag chosen does not search a month of responses. Answers are the Calls
-- of those operations.
-- ORDER BY: project, dimension and value, then the hour, so one tag's month lies in a few granules.
CREATE TABLE IF NOT EXISTS llm_calls_by_value_1h
(
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
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
    StreamCalls SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CachedTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    DurationMsSum SimpleAggregateFunction(sum, Float64),
    DurationMsMin SimpleAggregateFunction(min, Float64),
    DurationMsMax SimpleAggregateFunction(max, Float64),
    DurationMsQuantiles AggregateFunction(quantileTDigest, Float64),
    TimeToFirstChunkMsQuantiles AggregateFunction(quantileTDigestIf, Float64, UInt8),
    Uncertain SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY (Project, Dimension, Value, Hour, ServiceName, Model, Provider, Operation, IsError, ErrorType)
TTL Hour + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Calls stored before this migration: folded in once, while the table is still empty (so a re-run adds nothing).
INSERT INTO llm_calls_by_value_1h
SELECT
    toStartOfHour(Timestamp) AS Hour, Project, 'tag' AS Dimension, Tag AS Value, ServiceName, Model, Provider,
    Operation, IsError, ErrorType,
    count(), sum(IsError), sum(IsStream), sum(InputTokens), sum(OutputTokens), sum(CachedTokens),
    sum(ReasoningTokens), sum(Duration / 1e6), min(Duration / 1e6), max(Duration / 1e6),
    quantileTDigestState(Duration / 1e6),
    quantileTDigestIfState(ifNull(TimeToFirstChunkMs, 0), isNotNull(TimeToFirstChunkMs)),
    countIf(Operation IN ('chat', 'text_completion', 'generate_content') AND multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases)))
FROM llm_calls
ARRAY JOIN arrayDistinct(Tags) AS Tag
WHERE (SELECT count() FROM llm_calls_by_value_1h) = 0
GROUP BY Hour, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType;

-- Chained after llm_calls_mv: each block of calls is folded into its hours, once under each of its tags.
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_by_value_1h_mv TO llm_calls_by_value_1h AS
SELECT
    toStartOfHour(Timestamp) AS Hour,
    Project,
    'tag' AS Dimension,
    Tag AS Value,
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
    quantileTDigestIfState(ifNull(TimeToFirstChunkMs, 0), isNotNull(TimeToFirstChunkMs)) AS TimeToFirstChunkMsQuantiles,
    countIf(Operation IN ('chat', 'text_completion', 'generate_content') AND multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases))) AS Uncertain
FROM llm_calls
ARRAY JOIN arrayDistinct(Tags) AS Tag
GROUP BY Hour, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType;
