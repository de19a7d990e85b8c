"""Insert blocks in ClickHouse's Native format, written column by column from the converted rows.

Why not clickhouse-connect's serializer (which the writer's careful path still uses): it encodes every map entry
and builds every LowCardinality dictionary in Python on each insert, which was a third of serve's conversion time.
Span attributes repeat from span to span, so serve encodes each distinct attribute once
(:func:`llmtap.collector.values.encoded_attributes_to_native` memoizes its Native bytes) and a map column becomes
one join of those bytes. LowCardinality columns are declared as plain ``String`` in the block: ClickHouse converts
a Native column to the table's type on insert, and builds the dictionary in C++.

Layout (ClickHouse docs, "Native" format, as sent over HTTP): number of columns and rows as LEB128, then per
column its name, its type and its data. Fixed-size values are little-endian; a String is its LEB128 length and
bytes; an Array is the cumulative end offset of each row (UInt64) followed by the elements of all rows as one
column; a Map is an Array of (key, value) tuples, i.e. offsets, then all keys, then all values.
"""

from __future__ import annotations

import operator
import re
import sys
from array import array
from collections.abc import Sequence, Sized
from itertools import accumulate, chain
from typing import Any

#: a map entry already in Native form: (key, key as Native String, value as Native String)
NativePair = tuple[str, bytes, bytes]

_FIXED = {
    "DateTime64(9)": "q", "UInt64": "Q", "Int64": "q", "Float64": "d", "UInt32": "I", "Int32": "i",
    "DateTime": "I", "UInt8": "B", "Bool": "B",
}  # fmt: skip
_SIZES = {"q": 8, "Q": 8, "d": 8, "I": 4, "i": 4, "B": 1}
assert all(array(code).itemsize == size for code, size in _SIZES.items())
_SWAP = sys.byteorder != "little"
_ARRAY = re.compile(r"Array\((.*)\)$")
_MAP = re.compile(r"Map\((.*?), (.*)\)$")
_LOW_CARDINALITY = "LowCardinality(String)"
_SHORT_PREFIXES = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
_key_bytes = operator.itemgetter(1)
_value_bytes = operator.itemgetter(2)


def _leb128(number: int) -> bytes:
    if number < 1 << 14:
        return _SHORT_PREFIXES[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def native_string(text: str) -> bytes:
    """One String value as Native writes it (LEB128 length, UTF-8 bytes)."""
    data = text.encode()
    return _leb128(len(data)) + data


def supports(type_name: str) -> bool:
    """True when :func:`block` can write a column of this ClickHouse type."""
    return _wire_type(type_name) is not None


def block(columns: dict[str, Sequence[Any]], types: dict[str, str]) -> bytes:
    """A Native block of ``columns`` (name -> one value per row), each written as its table type ``types[name]``."""
    rows = len(next(iter(columns.values()))) if columns else 0
    parts = [_leb128(len(columns)), _leb128(rows)]
    for name, values in columns.items():
        wire_type = _wire_type(types[name])
        if wire_type is None:
            raise TypeError(f"column {name}: type {types[name]} is not supported by the Native writer")
        parts += (native_string(name), native_string(wire_type))
        _write(wire_type, values, parts)
    return b"".join(parts)


def _wire_type(type_name: str) -> str | None:
    """The type to declare in the block (LowCardinality(String) -> String), None when unsupported."""
    if type_name in _FIXED or type_name == "String":
        return type_name
    if type_name == _LOW_CARDINALITY:
        return "String"
    array_of = _ARRAY.match(type_name)
    if array_of:
        inner = _wire_type(array_of.group(1))
        return None if inner is None else f"Array({inner})"
    map_of = _MAP.match(type_name)
    if map_of:
        key, value = (_wire_type(part) for part in map_of.groups())
        return f"Map({key}, {value})" if key == value == "String" else None
    return None


def _write(wire_type: str, values: Sequence[Any], parts: list[bytes]) -> None:
    code = _FIXED.get(wire_type)
    if code is not None:
        data = array(code, values)
        if _SWAP:
            data.byteswap()
        parts.append(data.tobytes())
    elif wire_type == "String":
        parts.append(_strings(values))
    elif wire_type.startswith("Array("):
        _write_offsets(values, parts)
        _write(wire_type[6:-1], list(chain.from_iterable(values)), parts)
    else:  # Map(String, String): rows are dicts, or tuples of NativePair (attributes encoded once, memoized)
        _write_offsets(values, parts)
        # A dict row (a resource's attributes) repeats for every span of the resource: encode it once.
        encoded: dict[int, list[NativePair]] = {}
        pairs = list(
            chain.from_iterable(
                _native_pairs(row, encoded) if isinstance(row, dict) else row for row in values
            )
        )
        parts.append(b"".join(map(_key_bytes, pairs)))
        parts.append(b"".join(map(_value_bytes, pairs)))


def _native_pairs(mapping: dict[str, str], encoded: dict[int, list[NativePair]]) -> list[NativePair]:
    pairs = encoded.get(id(mapping))
    if pairs is None:
        pairs = encoded[id(mapping)] = [(k, native_string(k), native_string(v)) for k, v in mapping.items()]
    return pairs


def _write_offsets(values: Sequence[Sized], parts: list[bytes]) -> None:
    offsets = array("Q", accumulate(map(len, values)))
    if _SWAP:
        offsets.byteswap()
    parts.append(offsets.tobytes())


def _strings(values: list[str]) -> bytes:
    encoded = list(map(str.encode, values))
    lengths = list(map(len, encoded))
    short = not lengths or max(lengths) < len(_SHORT_PREFIXES)
    prefixes = map(_SHORT_PREFIXES.__getitem__ if short else _leb128, lengths)
    return b"".join(chain.from_iterable(zip(prefixes, encoded, strict=True)))
