-- Answer quality at dashboard speed: a response that says "I'm not sure" is found by reading its text, and a month
-- of responses is gigabytes. llm_answers_1m/llm_answers_1h count, per minute/hour, the answers and how many of
-- them are uncertain, at insert time, so the "uncertain answers" panels read thousands of rollup rows instead.
--
-- llm_uncertain_phrases: what marks an answer as uncertain, a case-insensitive substring of the response text.
-- Edit the rows to change it (INSERT INTO / ALTER TABLE … DELETE WHERE Phrase = …); the dashboards, the alert
-- rule and the rollup views all read this table. The rollups count with the phrases in force when a call was
-- stored; the dashboards' per-call branch (a user or tag selected) and the alert use the current ones.
CREATE TABLE IF NOT EXISTS llm_uncertain_phrases
(
    Phrase String
)
ENGINE = MergeTree
ORDER BY Phrase;

-- The default phrases, only into an empty table (so a re-run, or a user's own list, is left alone).
INSERT INTO llm_uncertain_phrases
SELECT arrayJoin([
    'i''m not sure', 'i’m not sure', 'i am not sure', 'i''m not certain', 'i’m not certain',
    'i don''t know', 'i don’t know', 'i do not know', 'i cannot be certain', 'i can''t be certain',
    'i don''t have enough information', 'i do not have enough information', 'it is unclear', 'it''s unclear'
]) AS Phrase
WHERE (SELECT count() FROM llm_uncertain_phrases) = 0;

-- Rollups of the answer operations (chat, text_completion, generate_content). The dimensions are those of
-- llm_calls_1m that dashboards filter by (project, service, model, status), plus the operation; Answers and
-- Uncertain are SimpleAggregateFunction sums (re-aggregate with sum() and GROUP BY, as for llm_calls_1m).
-- An answer is uncertain when the text of its output messages (text parts, else the JSON itself, like the
-- dashboards' llmtap.grafana.sql.message_text) contains a phrase.
CREATE TABLE IF NOT EXISTS llm_answers_1m
(
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    Answers SimpleAggregateFunction(sum, UInt64),
    Uncertain SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (Project, ServiceName, Model, Minute, Operation, IsError)
TTL Minute + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS llm_answers_1h
(
    Hour DateTime CODEC(Delta(4), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    Answers SimpleAggregateFunction(sum, UInt64),
    Uncertain SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY (Project, ServiceName, Model, Hour, Operation, IsError)
TTL Hour + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Calls stored before this migration: folded in once, while the tables are still empty (on a cluster the minutes
-- are written to every shard before the statement returns, so the hours can be summed from them).
INSERT INTO llm_answers_1m SETTINGS distributed_foreground_insert = 1
SELECT
    toStartOfMinute(Timestamp) AS Minute, Project, ServiceName, Model, Operation, IsError,
    count() AS Answers,
    countIf(multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases))) AS Uncertain
FROM llm_calls
WHERE Operation IN ('chat', 'text_completion', 'generate_content')
    AND (SELECT count() FROM llm_answers_1m) = 0
GROUP BY Minute, Project, ServiceName, Model, Operation, IsError;

INSERT INTO llm_answers_1h
SELECT toStartOfHour(Minute) AS Hour, Project, ServiceName, Model, Operation, IsError, sum(Answers), sum(Uncertain)
FROM llm_answers_1m
WHERE (SELECT count() FROM llm_answers_1h) = 0
GROUP BY Hour, Project, ServiceName, Model, Operation, IsError;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_answers_1m_mv TO llm_answers_1m AS
SELECT
    toStartOfMinute(Timestamp) AS Minute, Project, ServiceName, Model, Operation, IsError,
    count() AS Answers,
    countIf(multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases))) AS Uncertain
FROM llm_calls
WHERE Operation IN ('chat', 'text_completion', 'generate_content')
GROUP BY Minute, Project, ServiceName, Model, Operation, IsError;

-- Hours from the minutes as they are inserted (a cascade: the per-call text search runs once per call).
CREATE MATERIALIZED VIEW IF NOT EXISTS llm_answers_1h_mv TO llm_answers_1h AS
SELECT
    toStartOfHour(Minute) AS Hour, Project, ServiceName, Model, Operation, IsError,
    sum(Answers) AS Answers,
    sum(Uncertain) AS Uncertain
FROM llm_answers_1m
GROUP BY Hour, Project, ServiceName, Model, Operation, IsError;
