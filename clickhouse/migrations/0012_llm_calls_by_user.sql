-- The calls' numbers in user order too, for everything asked about one user that the rollups cannot answer:
-- a dashboard chart over time with a user chosen (hourly buckets, which llm_calls_by_value_1d's days cannot
-- serve), its failures table, `llmtap logs --user`, an export of one user's calls.
--
-- llm_calls is sorted by project and hour, so one user's calls lie in every granule of the range: a busy user
-- (6% of the calls) made each such chart read the whole month, 0.5-0.7 s on 10 million calls. The projection
-- keeps a copy of the columns those queries read, sorted by project, user and time, which ClickHouse reads
-- instead of the table whenever a query filters by user and needs no other column (0.6 -> 0.2 s for calls per
-- second by model over 30 days; the 400 most recent calls of a user find their time bound there too).
-- Content, ids, tags, attributes and sessions are left out: a query that reads them reads the table.
-- Granules of 2048 rows rather than the table's 8192: a user's calls are one run per daily part, and the granules
-- at its two ends are read whole, so a busy user's month read 2.1M rows for 0.6M calls with 8192 (0.15 s), 0.9M
-- with 2048 (0.07 s). Not smaller: ClickHouse reads a projection when it takes fewer granules than the table, so
-- a user with more than a quarter of the calls is read from the table (an eighth with 1024-row granules).
--
-- Cost: about 28 MB per million calls (llm_calls takes about 235 MB without it) and a sort of each inserted block
-- (MATERIALIZE builds it for the calls already stored, in the background: until it has, those parts are read
-- from the table).
-- 'rebuild': a lightweight DELETE (erasing one user's calls, say) rebuilds the projection of the parts it
-- touches; without the setting ClickHouse refuses DELETE on a table with projections.
ALTER TABLE llm_calls MODIFY SETTING lightweight_mutation_projection_mode = 'rebuild';
ALTER TABLE llm_calls ADD PROJECTION IF NOT EXISTS by_user (
    SELECT
        Timestamp, Project, UserId, ServiceName, Model, Provider, Operation, IsError, ErrorType, StatusMessage,
        Duration, InputTokens, OutputTokens, CachedTokens, ReasoningTokens, IsStream, TimeToFirstChunkMs
    ORDER BY (Project, UserId, Timestamp)
) WITH SETTINGS (index_granularity = 2048);
ALTER TABLE llm_calls MATERIALIZE PROJECTION by_user;
