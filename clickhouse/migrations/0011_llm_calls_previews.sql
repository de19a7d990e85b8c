-- Previews of the prompt and the response, kept when a call is stored: the text of the conversation's last
-- message (the latest turn: semconv gen_ai.*.messages are JSON arrays of {role, parts: [{type, content}]}), on one
-- line, at most 160 characters; the JSON itself when that message holds no text. Tables of calls (the explorer,
-- `llmtap logs`) show them.
--
-- Computing them when read meant decompressing the full prompts and responses of every granule holding one of
-- the rows shown, and llm_calls' sort order (project, service, model, then time) puts the newest calls of a day
-- in every one of its granules: the explorer's 500 newest calls read the whole day's content (0.3-0.4 s on 10
-- million calls). A preview is about a tenth of its content.
--
-- They expire with the content (the same 30 days; `llmtap db retention` changes both, and a store set up by
-- llmtap aligns them with InputMessages when the content retention was changed before this migration). Existing
-- calls get theirs from MATERIALIZE COLUMN, which reads the stored content once, in the background.
--
-- llm_calls_costed selects c.*, which a view resolves when it is created: it is created again to include them.

ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS InputPreview String DEFAULT leftUTF8(replaceRegexpAll(
        if(empty(arrayFilter(x -> x != '', if(JSONHas(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'parts'),
            arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'parts')),
            [JSONExtractString(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'content')]))),
        InputMessages,
        arrayStringConcat(arrayFilter(x -> x != '', if(JSONHas(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'parts'),
            arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'parts')),
            [JSONExtractString(arrayElement(JSONExtractArrayRaw(InputMessages), -1), 'content')])), ' ')),
        '\\s+', ' '), 160)
    TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(1));

ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS OutputPreview String DEFAULT leftUTF8(replaceRegexpAll(
        if(empty(arrayFilter(x -> x != '', if(JSONHas(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'parts'),
            arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'parts')),
            [JSONExtractString(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'content')]))),
        OutputMessages,
        arrayStringConcat(arrayFilter(x -> x != '', if(JSONHas(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'parts'),
            arrayMap(p -> JSONExtractString(p, 'content'), JSONExtractArrayRaw(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'parts')),
            [JSONExtractString(arrayElement(JSONExtractArrayRaw(OutputMessages), -1), 'content')])), ' ')),
        '\\s+', ' '), 160)
    TTL toDateTime(Timestamp) + INTERVAL 30 DAY CODEC(ZSTD(1));

ALTER TABLE llm_calls MATERIALIZE COLUMN InputPreview;

ALTER TABLE llm_calls MATERIALIZE COLUMN OutputPreview;

CREATE OR REPLACE VIEW llm_calls_costed AS
SELECT
    c.*,
    c.DurationMs AS DurationMs,
    p.Model AS PriceModel,
    if(p.Model = '', NULL,
       ((c.InputTokens - least(c.CachedTokens, c.InputTokens)) * p.InputPerMillion
        + least(c.CachedTokens, c.InputTokens) * p.CachedInputPerMillion
        + c.OutputTokens * p.OutputPerMillion) / 1e6) AS Cost
FROM llm_calls AS c
LEFT ASOF JOIN model_prices_effective AS p
    ON if(c.Model IN (SELECT Model FROM model_prices),
          c.Model, replaceRegexpOne(c.Model, '-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4})$', '')) = p.Model
    AND toDate(c.Timestamp) >= p.ValidFrom;
