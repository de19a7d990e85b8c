-- llm_calls_judged: each call's numbers once more, with Uncertain (an answer whose response text holds one of
-- llm_uncertain_phrases, as in 0007) judged once, for the views that count uncertain answers.
--
-- Three views judged every answer on their own (the answer rollups, 0007; the tags' hours, 0013; the answers per
-- user and tag, 0014): each one pulled the text out of the response's JSON and searched it, 4-6 us per answer
-- of ~430 bytes (one thread, 833k stored answers). Now one view judges each block of calls, and the three read
-- the judged rows from here: ClickHouse's CPU per span written (bench/ingest.py's rows, all views, interleaved
-- runs of 100k spans) went from a median of 113 to 104 us. Engine Null: the rows are passed on to the views and
-- not stored.
CREATE TABLE IF NOT EXISTS llm_calls_judged
(
    Timestamp DateTime64(9),
    Project LowCardinality(String),
    ServiceName LowCardinality(String),
    Model LowCardinality(String),
    Provider LowCardinality(String),
    Operation LowCardinality(String),
    IsError UInt8,
    ErrorType LowCardinality(String),
    UserId String,
    Tags Array(String),
    IsStream UInt8,
    InputTokens UInt64,
    OutputTokens UInt64,
    CachedTokens UInt64,
    ReasoningTokens UInt64,
    Duration UInt64,
    TimeToFirstChunkMs Nullable(Float64),
    Uncertain UInt8
)
ENGINE = Null;

-- Chained after llm_calls_mv. Only answers are searched (`AND` evaluates its second argument for the rows that
-- pass the first), with the dashboards' test (grafana/sql.py is_uncertain).
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_judged_mv TO llm_calls_judged AS
SELECT
    Timestamp, Project, ServiceName, Model, Provider, Operation, IsError, ErrorType, UserId, Tags, IsStream,
    InputTokens, OutputTokens, CachedTokens, ReasoningTokens, Duration, TimeToFirstChunkMs,
    Operation IN ('chat', 'text_completion', 'generate_content')
        AND multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')), (SELECT groupArray(Phrase) FROM llm_uncertain_phrases)) AS Uncertain
FROM llm_calls;

-- The three views move to the judged rows in place (MODIFY QUERY swaps a view's query without a moment in which
-- a block of calls is counted twice or not at all). Their rows are the same as before.
ALTER TABLE llm_answers_1m_mv MODIFY QUERY
SELECT
    toStartOfMinute(Timestamp) AS Minute, Project, ServiceName, Model, Operation, IsError,
    count() AS Answers,
    countIf(judged.Uncertain = 1) AS Uncertain
FROM llm_calls_judged AS judged
WHERE Operation IN ('chat', 'text_completion', 'generate_content')
GROUP BY Minute, Project, ServiceName, Model, Operation, IsError;

ALTER TABLE llm_calls_by_value_1h_mv MODIFY QUERY
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
    countIf(judged.Uncertain = 1) AS Uncertain
FROM llm_calls_judged AS judged
ARRAY JOIN arrayDistinct(Tags) AS Tag
GROUP BY Hour, Project, Dimension, Value, ServiceName, Model, Provider, Operation, IsError, ErrorType;

ALTER TABLE llm_answers_by_value_mv MODIFY QUERY
SELECT Timestamp, Project, Pair.1 AS Dimension, Pair.2 AS Value, ServiceName, Model, Operation, IsError, Uncertain
FROM llm_calls_judged
ARRAY JOIN arrayConcat([('user', UserId)], arrayMap(tag -> ('tag', tag), arrayDistinct(Tags))) AS Pair
WHERE Operation IN ('chat', 'text_completion', 'generate_content');
