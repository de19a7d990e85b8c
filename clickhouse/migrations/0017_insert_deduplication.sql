-- Every table serve writes, directly or through a materialized view, keeps the ids of its last 1,000 inserted
-- blocks, so that an insert sent again with the same `insert_deduplication_token` adds nothing where it had
-- landed and everything where it had not.
--
-- A `kill -9` (or a power cut) can stop an insert after otel_traces took its rows but before llm_calls or a
-- rollup did. serve then replays that batch on start, exactly as it was, with the same token (see
-- collector/pipeline.py), and `deduplicate_blocks_in_dependent_materialized_views` carries the token down every
-- chain of views: each table drops the block it already has and takes the one it missed. Replayed batches come
-- first after a restart, so 1,000 blocks is a wide margin.
--
-- Inserts without a token are de-duplicated by content from now on: a block identical to one of the last 1,000
-- (the same rows in the same order) is dropped, which is what a client's retry of the same batch should get. The
-- Null table llm_calls_judged stores nothing and has no such log; the tables behind it have. On a cluster the
-- tables are Replicated and de-duplicate with `replicated_deduplication_window` already; there the setting is
-- inert.
--
-- Cost: one small file per table, a line appended per inserted block.
--
-- A view changed by MODIFY QUERY gets, in the process that ran the ALTER, another identity in the ids of the
-- blocks it writes than after a restart (ClickHouse 25.8 and 26.9 alike): a batch that process inserted in part and
-- a restarted one replayed was stored twice in the tables behind the view. Detached and attached again, the view
-- has its lasting identity at once. The views 0016 changed get that here; a later migration that changes a view
-- by MODIFY QUERY must detach and attach it too. (On a server shared with another writer, inserts in the instant a
-- view is detached skip it; `llmtap db migrate` with the writers stopped avoids that.)
ALTER TABLE otel_traces MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_traces_trace_id_ts MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_logs MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_metrics_gauge MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_metrics_sum MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_metrics_histogram MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_metrics_exponential_histogram MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE otel_metrics_summary MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls_1m MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls_1h MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls_1d MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_answers_1m MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_answers_1h MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls_by_value_1d MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_calls_by_value_1h MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE llm_answers_by_value MODIFY SETTING non_replicated_deduplication_window = 1000;
DETACH TABLE IF EXISTS llm_answers_1m_mv;
ATTACH TABLE llm_answers_1m_mv;
DETACH TABLE IF EXISTS llm_calls_by_value_1h_mv;
ATTACH TABLE llm_calls_by_value_1h_mv;
DETACH TABLE IF EXISTS llm_answers_by_value_mv;
ATTACH TABLE llm_answers_by_value_mv;
