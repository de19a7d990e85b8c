"""Model prices: read the CSV we maintain (or a user's), load it into ``model_prices``, list what is loaded.

Cost is computed at query time (views ``llm_calls_costed`` and ``llm_calls_1m_costed``), so reloading a file
with a fixed price re-costs all history at once. A load replaces every row of the same source ('llmtap' for
the bundled file, 'user' for ``llmtap db prices --load``), so a model removed from the file loses its price.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

BUNDLED_PRICES = Path(__file__).with_name("data") / "model_prices.csv"
COLUMNS = ("Model", "ValidFrom", "InputPerMillion", "CachedInputPerMillion", "OutputPerMillion")
SOURCES = ("llmtap", "user")


class PriceFileError(ValueError):
    """A prices file that cannot be loaded; the message names the file and line."""


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens of one model from ``valid_from`` on."""

    model: str
    valid_from: date
    input_per_million: float
    cached_input_per_million: float
    output_per_million: float
    source: str = "llmtap"


def read_prices(path: Path) -> list[ModelPrice]:
    """Parse a prices CSV (header ``Model,ValidFrom,InputPerMillion,CachedInputPerMillion,OutputPerMillion``;
    ``#`` lines are comments; an empty cached price means no discount). Every bad line is reported at once."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if not line.lstrip().startswith("#")
    ]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise PriceFileError(f"{path}: no header line; expected {','.join(COLUMNS)}")
    rows = csv.reader([line for _, line in lines])
    header = [name.strip() for name in next(rows)]
    if tuple(header) != COLUMNS:
        raise PriceFileError(
            f"{path}:{lines[0][0]}: header must be {','.join(COLUMNS)}, got {','.join(header)}"
        )
    prices: list[ModelPrice] = []
    problems: list[str] = []
    seen: set[tuple[str, date]] = set()
    for (number, _), fields in zip(lines[1:], rows, strict=True):
        try:
            price = _parse_row(fields)
            if (price.model, price.valid_from) in seen:
                raise ValueError(f"{price.model} from {price.valid_from} is listed twice")
            seen.add((price.model, price.valid_from))
            prices.append(price)
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:
        raise PriceFileError("\n".join(problems))
    return prices


def _parse_row(fields: list[str]) -> ModelPrice:
    if len(fields) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(fields)}")
    model, valid_from, input_price, cached_price, output_price = (field.strip() for field in fields)
    if not model:
        raise ValueError("empty Model")
    try:
        day = date.fromisoformat(valid_from)
    except ValueError:
        raise ValueError(f"ValidFrom {valid_from!r} is not a date like 2025-01-31") from None
    input_value = _price("InputPerMillion", input_price)
    cached_value = _price("CachedInputPerMillion", cached_price) if cached_price else input_value
    return ModelPrice(model, day, input_value, cached_value, _price("OutputPerMillion", output_price))


def _price(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} {text!r} must be a finite, non-negative number")
    return value


def load_prices(client: Client, prices: list[ModelPrice], *, source: str = "llmtap") -> int:
    """Replace the rows of ``source`` in model_prices with ``prices``; returns how many rows were loaded."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    client.command(
        "ALTER TABLE model_prices DELETE WHERE Source = {source:String}",
        parameters={"source": source},
        settings={"mutations_sync": 2},
    )
    if prices:
        client.insert(
            "model_prices",
            [
                [
                    p.model,
                    p.valid_from,
                    p.input_per_million,
                    p.cached_input_per_million,
                    p.output_per_million,
                    source,
                ]
                for p in prices
            ],
            column_names=[*COLUMNS, "Source"],
        )
    return len(prices)


def load_bundled_prices(client: Client) -> int:
    """Load the prices file shipped with llmtap (``llmtap db migrate`` does this on every run)."""
    return load_prices(client, read_prices(BUNDLED_PRICES), source="llmtap")


def list_prices(client: Client, model: str | None = None) -> list[ModelPrice]:
    """The loaded prices (a user's row shadows ours for the same model and date), by model and date."""
    where = "WHERE Model = {model:String}" if model else ""
    sql = f"""
    SELECT Model, ValidFrom, argMax(InputPerMillion, Source = 'user'), argMax(CachedInputPerMillion, Source = 'user'),
           argMax(OutputPerMillion, Source = 'user'), if(countIf(Source = 'user') > 0, 'user', 'llmtap')
    FROM model_prices {where}
    GROUP BY Model, ValidFrom
    ORDER BY Model, ValidFrom"""
    return [ModelPrice(*row) for row in client.query(sql, parameters={"model": model or ""}).result_rows]
