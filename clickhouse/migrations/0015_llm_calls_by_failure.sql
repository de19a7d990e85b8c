-- The failed calls together, for the failures dashboard's tables whatever else is chosen.
--
-- "Error types" and "Latest failed calls" read llm_calls itself (each type's latest message, each failure's
-- row). Failures are a few percent of the calls and lie in every granule, so with a filter the rollups cannot
-- answer (a tag, say) they read that filter's column for every call of the range: 0.57 s over 30 days on 10
-- million calls with one tag chosen, 0.19 s with none. This projection keeps the columns those tables and their
-- filters read sorted by status first, so ClickHouse reads the failures' rows alone (0.57 -> 0.10 s).
-- Content, ids, users (0012's projection serves those), sessions and attributes are left out: a query that
-- reads them reads the table.
--
-- Cost: about 9 MB per million calls and a sort of each inserted block (MATERIALIZE builds it for the calls
-- already stored, in the background).
ALTER TABLE llm_calls ADD PROJECTION IF NOT EXISTS by_failure (
    SELECT Timestamp, Project, ServiceName, Model, IsError, ErrorType, StatusMessage, Tags
    ORDER BY (IsError, Project, Timestamp)
);
ALTER TABLE llm_calls MATERIALIZE PROJECTION by_failure;
