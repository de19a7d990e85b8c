"""Export request classes for the row converters, with every attribute list left as encoded KeyValue messages.

Reading an attribute through the generated classes costs three Python objects (the KeyValue, its AnyValue, the
value), which made attribute access most of serve's conversion time. These classes are built from
opentelemetry-proto's own descriptors, changed in one way only: in the signal's file (trace.proto, logs.proto,
metrics.proto) each ``repeated KeyValue`` field is declared ``repeated bytes``. Protobuf encodes a message field
and a bytes field identically, so protobuf's parser reads the same payload and hands each attribute over as the
bytes of its KeyValue, which :func:`llmtap.collector.values.encoded_attributes_to_map` converts (memoized, since
most attributes repeat from span to span). Resource and scope attributes (common.proto, resource.proto) are untouched.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from llmtap.collector.decode import SIGNALS

_KEY_VALUE = ".opentelemetry.proto.common.v1.KeyValue"
_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES


def _encoded_attributes(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type_name == _KEY_VALUE:
            field.type = _BYTES
            field.ClearField("type_name")
    for nested in message.nested_type:
        _encoded_attributes(nested)


def _file_proto(descriptor: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


def _view_class(request_type: Any) -> Any:
    """The class of ``request_type`` in a private pool where the signal's attribute lists are bytes."""
    service_file = request_type.DESCRIPTOR.file
    (signal_file,) = service_file.dependencies  # e.g. trace_service.proto -> trace.proto
    pool = descriptor_pool.DescriptorPool()
    for dependency in signal_file.dependencies:  # common.proto, resource.proto: unchanged
        pool.Add(_file_proto(dependency))
    signal_proto = _file_proto(signal_file)
    for message in signal_proto.message_type:
        _encoded_attributes(message)
    pool.Add(signal_proto)
    pool.Add(_file_proto(service_file))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(request_type.DESCRIPTOR.full_name))


VIEW_TYPES: dict[str, Any] = {name: _view_class(signal.request_type) for name, signal in SIGNALS.items()}


def parse_view(signal: str, payload: bytes) -> Any:
    """A spooled (already validated) export request of ``signal``, attribute lists as encoded KeyValues."""
    return VIEW_TYPES[signal].FromString(payload)
