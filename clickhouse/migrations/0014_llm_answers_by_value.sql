-- llm_answers_by_value: each answer (chat, text_completion, generate_content call) under its user and under each
-- of its tags, and whether it was uncertain, sorted by value: the uncertain-answers chart with one user or tag
-- chosen.
--
-- Uncertain answers are found by reading the response text (see 0007). The answer rollups have no user or tag,
-- so with one chosen that chart searched the responses of the range: llm_calls is sorted by hour, and a busy
-- user's calls lie in every granule, so it read every response of the month (4.8-5.1 s over 30 days on 10
-- million calls; a tag's day 0.37 s). llm_calls_by_value_1h (0013) counts a tag's uncertain answers per hour, but
-- a chart of a day or less has minute buckets, and a user's hours are about as many rows as calls. This keeps a
-- narrow row per answer and value instead, judged at insert time against llm_uncertain_phrases as the answer
-- rollups are, in value order (Dimension 'user', Value user.id; 'tag', one row per distinct tag), so the chart
-- reads the chosen value's answers alone: about 7 MB per million calls for the users, as much again for a tag
-- on every call.
-- PARTITION BY month: a value's month is then one run of granules per part, not one per day.
CREATE TABLE IF NOT EXISTS llm_answers_by_value
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    Dimension LowCardinality(String) CODEC(ZSTD(1)),
    Value String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    Uncertain UInt8
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (Project, Dimension, Value, Timestamp)
TTL toDateTime(Timestamp) + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Answers stored before this migration: copied once, while the table is still empty (so a re-run adds nothing).
-- Each response is searched once, then its row is repeated under each value.
INSERT INTO llm_answers_by_value
SELECT Timestamp, Project, Pair.1, Pair.2, ServiceName, Model, Operation, IsError, Uncertain
FROM (
    SELECT
        Timestamp, Project, UserId, Tags, ServiceName, Model, Operation, IsError,
        multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
            (SELECT groupArray(Phrase) FROM llm_uncertain_phrases)) AS Uncertain
    FROM llm_calls
    WHERE Operation IN ('chat', 'text_completion', 'generate_content')
        AND (SELECT count() FROM llm_answers_by_value) = 0
)
ARRAY JOIN arrayConcat([('user', UserId)], arrayMap(tag -> ('tag', tag), arrayDistinct(Tags))) AS Pair;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_answers_by_value_mv TO llm_answers_by_value AS
SELECT Timestamp, Project, Pair.1 AS Dimension, Pair.2 AS Value, ServiceName, Model, Operation, IsError, Uncertain
FROM (
    SELECT
        Timestamp, Project, UserId, Tags, ServiceName, Model, Operation, IsError,
        multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
            (SELECT groupArray(Phrase) FROM llm_uncertain_phrases)) AS Uncertain
    FROM llm_calls
    WHERE Operation IN ('chat', 'text_completion', 'generate_content')
)
ARRAY JOIN arrayConcat([('user', UserId)], arrayMap(tag -> ('tag', tag), arrayDistinct(Tags))) AS Pair;
