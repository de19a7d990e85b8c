-- llm_answers_by_user: each answer (chat, text_completion, generate_content call) of a user, and whether it was
-- uncertain, sorted by user: the uncertain-answers chart with one user chosen.
--
-- Uncertain answers are found by reading the response text (see 0007). The answer rollups have no user, so with
-- a user chosen that chart searched a month of responses: llm_calls is sorted by hour, and a busy user's calls
-- lie in every granule, so it read every response of the month (4.8-5.1 s over 30 days on 10 million calls).
-- No rollup helps, since a user's hours are about as many rows as calls (see 0013); this keeps one narrow row
-- per answer, judged at insert time against llm_uncertain_phrases as the answer rollups are, in user order
-- (about 10 MB per million calls), so the chart reads the chosen user's answers alone.
-- PARTITION BY month: a user's month is then one run of granules per part, not one per day.
CREATE TABLE IF NOT EXISTS llm_answers_by_user
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    Project LowCardinality(String) CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Model LowCardinality(String) CODEC(ZSTD(1)),
    Operation LowCardinality(String) CODEC(ZSTD(1)),
    IsError UInt8,
    Uncertain UInt8
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(Timestamp)
ORDER BY (Project, UserId, Timestamp)
TTL toDateTime(Timestamp) + INTERVAL 400 DAY
SETTINGS ttl_only_drop_parts = 1;

-- Answers stored before this migration: copied once, while the table is still empty (so a re-run adds nothing).
INSERT INTO llm_answers_by_user
SELECT
    Timestamp, Project, UserId, ServiceName, Model, Operation, IsError,
    multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases))
FROM llm_calls
WHERE Operation IN ('chat', 'text_completion', 'generate_content')
    AND (SELECT count() FROM llm_answers_by_user) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_answers_by_user_mv TO llm_answers_by_user AS
SELECT
    Timestamp, Project, UserId, ServiceName, Model, Operation, IsError,
    multiSearchAnyCaseInsensitiveUTF8(if(empty(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages))))), OutputMessages, arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(m -> if(JSONHas(m, 'parts'), arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(m, 'parts')), [JSONExtractString(m, 'content')]), JSONExtractArrayRaw(OutputMessages)))), '\n')),
        (SELECT groupArray(Phrase) FROM llm_uncertain_phrases)) AS Uncertain
FROM llm_calls
WHERE Operation IN ('chat', 'text_completion', 'generate_content');
