-- An empty phrase is a substring of every answer: once inserted, the answer rollups would count every answer
-- stored from then on as uncertain. Refuse it at the door, with ClickHouse's own constraint error.
ALTER TABLE llm_uncertain_phrases ADD CONSTRAINT IF NOT EXISTS phrase_not_empty CHECK Phrase != '';
