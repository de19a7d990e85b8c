"""OTLP attribute values turned into strings exactly as the Go pdata library does it.

The contrib exporter stores every attribute as ``Value.AsString()`` (go.opentelemetry.io/collector/pdata,
pcommon/value.go) in a ``Map(LowCardinality(String), String)``, sorted by key (exporter
internal/AttributesToMap, which collects into an ordered map sorted with ``cmp.Compare``). To write the very
same rows, each rule below names the Go function it mirrors.
"""

from __future__ import annotations

import base64
import json
import math
import operator
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from llmtap.collector.native import NativePair, native_string
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

_encode_json_string = json.encoder.encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses
_NEEDS_HTML_ESCAPE = re.compile("[<>&\u2028\u2029]")
_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
# Memos for encoded attribute lists: encoded KeyValue -> (key, AsString) and -> its Native bytes, since attributes
# such as the operation, provider, model, server, flags and tags repeat from span to span; and the keys of a list in
# arrival order -> which positions to keep in which order, since one instrumentation emits the same keys in the same
# order every time. Each is bounded (_MEMO_ENTRIES entries, KeyValues of up to _MEMO_ENTRY_BYTES; a few MiB in all)
# and emptied when full.
_MEMO_ENTRIES = 8192
_MEMO_ENTRY_BYTES = 256
_memo: dict[bytes, tuple[str, str]] = {}
_native_memo: dict[bytes, NativePair] = {}
_native_keys: dict[str, bytes] = {}  # attribute key -> its Native bytes (keys repeat even when values do not)
_key_orders: dict[tuple[str, ...], tuple[int, ...]] = {}
_first = operator.itemgetter(0)


class _Unsupported(ValueError):
    """encoding/json refuses NaN and ±Inf; AsString then returns an empty string for the whole value."""


def go_float(value: float) -> str:
    """pcommon float64AsString: ES6-style shortest formatting, like encoding/json.

    Fixed notation ('f', -1) unless |x| < 1e-6 or |x| >= 1e21, then exponent notation ('e', -1) with the
    exponent's leading zero dropped ("1e-07" -> "1e-7"). NaN/Inf become "json: unsupported value: NaN" etc.
    """
    if math.isnan(value):
        return "json: unsupported value: NaN"
    if math.isinf(value):
        return "json: unsupported value: " + ("+Inf" if value > 0 else "-Inf")
    magnitude = abs(value)
    text = repr(value)  # Python's repr is also the shortest round-tripping digit string
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, exponent = text.split("e")  # repr always uses exponent notation in these ranges
        sign, digits = exponent[0], exponent[1:]
        if sign == "-" and len(digits) == 2 and digits[0] == "0":
            digits = digits[1]
        return f"{mantissa}e{sign}{digits}"
    if "e" in text:  # 1e16 <= |x| < 1e21: repr switched to exponent notation, Go still writes every digit
        return format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _go_json_string(text: str) -> str:
    # encoding/json escapes like Python's JSON string encoder (ensure_ascii=False), plus HTML-safe escapes of
    # <, >, & and the JavaScript line separators (encodeState.string with escapeHTML=true).
    encoded = _encode_json_string(text)
    return encoded.translate(_HTML_ESCAPES) if _NEEDS_HTML_ESCAPE.search(encoded) else encoded


def _go_json(value: Any) -> str:
    """encoding/json.Marshal of the AsRaw() tree (maps with sorted keys, []byte as base64)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _Unsupported
        return go_float(value)
    if isinstance(value, bytes):
        return '"' + base64.b64encode(value).decode() + '"'
    if isinstance(value, list):
        return "[" + ",".join(_go_json(item) for item in value) + "]"
    return "{" + ",".join(_go_json_string(k) + ":" + _go_json(value[k]) for k in sorted(value)) + "}"


def _as_raw(value: Any) -> Any:
    """pcommon Value.AsRaw: the Go value encoding/json will see (kvlists become maps, last key wins)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "array_value":
        return [_as_raw(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _as_raw(kv.value) for kv in value.kvlist_value.values}
    return None


def as_string(value: Any) -> str:
    """pcommon Value.AsString for an OTLP AnyValue message."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)  # strconv.FormatInt(v, 10)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"  # strconv.FormatBool
    if kind == "double_value":
        return go_float(value.double_value)  # float64AsString
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()  # base64.StdEncoding
    if kind is None:
        return ""  # ValueTypeEmpty
    try:  # ValueTypeMap / ValueTypeSlice: json.Marshal(AsRaw()), error ignored -> ""
        return _go_json(_as_raw(value))
    except _Unsupported:
        return ""


def attributes_to_map(attributes: Any) -> dict[str, str]:
    """exporter internal.AttributesToMap: every key -> AsString(value), ordered by key (the last duplicate wins)."""
    pairs = {kv.key: as_string(kv.value) for kv in attributes}
    return {key: pairs[key] for key in sorted(pairs)}


def encoded_attributes_to_map(encoded: Sequence[bytes]) -> dict[str, str]:
    """AttributesToMap for an attribute list kept as encoded KeyValue messages (see request_views)."""
    return dict(_last_of_each_in_key_order(encoded, _memo, _decode_attribute))


def encoded_attributes_to_native(encoded: Sequence[bytes]) -> tuple[NativePair, ...]:
    """The same map as :func:`encoded_attributes_to_map`, each entry already in Native form (for native.block).

    Encoding each distinct attribute once (memoized) instead of on every insert is what makes serve's Native
    writer cheap: most of a span's attributes repeat from span to span.
    """
    return _last_of_each_in_key_order(encoded, _native_memo, _decode_native)


def _last_of_each_in_key_order(
    encoded: Sequence[bytes], memo: dict[bytes, Any], decode: Any
) -> tuple[Any, ...]:
    """Decode each KeyValue (through ``memo``) and keep the last of each key, in key order."""
    if not encoded:
        return ()
    raws = list(encoded)
    items = list(map(memo.get, raws))
    if None in items:
        items = [item or decode(raw) for item, raw in zip(items, raws, strict=True)]
    keys = tuple(map(_first, items))
    order = _key_orders.get(keys)
    if order is None:
        order = _remember(_key_orders, keys, _sorted_last_of_each(keys))
    return tuple(map(items.__getitem__, order))


def _sorted_last_of_each(keys: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of the pairs to keep, in key order: the last of each key (a Go map keeps the last duplicate)."""
    last = {key: index for index, key in enumerate(keys)}
    return tuple(last[key] for key in sorted(last))


def _key_and_text(raw: bytes) -> tuple[str, str]:
    attribute = KeyValue.FromString(raw)
    value = attribute.value
    return attribute.key, value.string_value or as_string(value)


def _decode_attribute(raw: bytes) -> tuple[str, str]:
    pair = _key_and_text(raw)
    if len(raw) <= _MEMO_ENTRY_BYTES:
        _remember(_memo, raw, pair)
    return pair


def _decode_native(raw: bytes) -> NativePair:
    key, text = _key_and_text(raw)
    key_bytes = _native_keys.get(key)
    if key_bytes is None:
        key_bytes = _remember(_native_keys, key, native_string(key))
    entry = (key, key_bytes, native_string(text))
    if len(raw) <= _MEMO_ENTRY_BYTES:
        _remember(_native_memo, raw, entry)
    return entry


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(memo) >= _MEMO_ENTRIES:
        memo.clear()
    memo[key] = value
    return value


def service_name(resource_attributes: Any) -> str:
    """exporter internal.GetServiceName: AsString of the first `service.name` resource attribute, else ''."""
    for kv in resource_attributes:
        if kv.key == "service.name":
            return as_string(kv.value)
    return ""


def trace_id_hex(trace_id: bytes) -> str:
    """traceutil.TraceIDToHexOrEmptyString: lowercase hex, '' for the all-zero (empty) id."""
    return "" if not trace_id or trace_id == _ZERO_TRACE_ID else trace_id.hex()


def span_id_hex(span_id: bytes) -> str:
    """traceutil.SpanIDToHexOrEmptyString: lowercase hex, '' for the all-zero (empty) id."""
    return "" if not span_id or span_id == _ZERO_SPAN_ID else span_id.hex()


def fixed_trace_id_hex(trace_id: bytes) -> str:
    """hex.EncodeToString(traceID[:]) as the metrics exporter writes exemplar ids: zeros when empty."""
    return (trace_id or _ZERO_TRACE_ID).hex()


def fixed_span_id_hex(span_id: bytes) -> str:
    """hex.EncodeToString(spanID[:]) for exemplar span ids: zeros when empty."""
    return (span_id or _ZERO_SPAN_ID).hex()
