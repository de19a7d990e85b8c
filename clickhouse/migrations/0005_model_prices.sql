-- model_prices: per-million-token prices by model and start date; cost is computed at query time from them,
-- so fixing a price re-costs every past call and rollup row, and a model without a price shows as unpriced
-- (NULL), never as free.
-- Rows with Source = 'llmtap' come from clickhouse/data/model_prices.csv (reloaded by `llmtap db migrate`);
-- Source = 'user' rows come from `llmtap db prices --load FILE` and win over ours for the same model and date.
-- Tiny table: ORDER BY (Model, ValidFrom) is the lookup order of the price joins below.
CREATE TABLE IF NOT EXISTS model_prices
(
    Model LowCardinality(String),
    ValidFrom Date,
    InputPerMillion Float64,
    CachedInputPerMillion Float64,
    OutputPerMillion Float64,
    Source LowCardinality(String),
    LoadedAt DateTime DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (Model, ValidFrom);

-- model_prices_effective: one price row per (Model, ValidFrom), a user's price winning over ours.
CREATE VIEW IF NOT EXISTS model_prices_effective AS
SELECT
    Model,
    ValidFrom,
    argMax(InputPerMillion, Source = 'user') AS InputPerMillion,
    argMax(CachedInputPerMillion, Source = 'user') AS CachedInputPerMillion,
    argMax(OutputPerMillion, Source = 'user') AS OutputPerMillion
FROM model_prices
GROUP BY Model, ValidFrom;

-- llm_calls_costed: llm_calls plus PriceModel (the priced name the call matched) and Cost in USD, NULL when the
-- model has no price on the call's date. The price in force is the latest ValidFrom on or before the call's
-- day (ASOF JOIN). A model matches its own name, else its name without a dated snapshot suffix
-- (gpt-4o-2024-08-06 -> gpt-4o, gpt-3.5-turbo-0125 -> gpt-3.5-turbo). Cached input tokens are part of the
-- input tokens (semconv) and are charged at the cached price.
CREATE VIEW IF NOT EXISTS llm_calls_costed AS
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

-- llm_calls_1m_costed: the rollup plus Cost per row, priced the same way (tokens are summed per model, and
-- cost is linear in tokens, so sum(Cost) over rollup rows equals the sum over the calls).
CREATE VIEW IF NOT EXISTS llm_calls_1m_costed AS
SELECT
    r.*,
    p.Model AS PriceModel,
    if(p.Model = '', NULL,
       ((r.InputTokens - least(r.CachedTokens, r.InputTokens)) * p.InputPerMillion
        + least(r.CachedTokens, r.InputTokens) * p.CachedInputPerMillion
        + r.OutputTokens * p.OutputPerMillion) / 1e6) AS Cost
FROM llm_calls_1m AS r
LEFT ASOF JOIN model_prices_effective AS p
    ON if(r.Model IN (SELECT Model FROM model_prices),
          r.Model, replaceRegexpOne(r.Model, '-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4})$', '')) = p.Model
    AND toDate(r.Minute) >= p.ValidFrom;
