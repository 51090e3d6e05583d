"""proto3 JSON of a message as a dict, like ``json_format.MessageToDict(message,
always_print_fields_with_no_presence=True)`` but about ten times faster.

json_format walks every field through generic Python code on each call; here each message
type gets a plan once (per field: its JSON name and a converter), so a reply costs one
``getattr`` and one small function call per field. Well-known types with a special JSON
form (Timestamp, Duration, FieldMask, wrappers) use their own ``ToJsonString``/value;
Struct, Value, ListValue and Any go back to json_format. tests/test_gateway_json.py checks
the output equals json_format's on every message type the gateway serves.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

FD = _descriptor.FieldDescriptor
INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}
STRING_WKT = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
WRAPPERS = {
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}
GENERIC_WKT = {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
}

Converter = Callable[[Any], Any]
_plans: dict[str, list[tuple[str, str, Converter, int]]] = {}
_HAS = 1  # field has presence: skip when unset
_REPEATED = 2
_MAP = 4


def _double(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _float(value: float) -> Any:
    if math.isfinite(value):
        return type_checkers.ToShortestFloat(value)
    return _double(value)


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _enum(enum: _descriptor.EnumDescriptor) -> Converter:
    names = {v.number: v.name for v in enum.values}
    if enum.full_name == "google.protobuf.NullValue":
        return lambda v: None
    return lambda v: names.get(v, v)


def scalar_converter(f: FD) -> Converter | None:
    """None means the value is already its JSON form (str, bool, int32)."""
    t = f.type
    if t in INT64:
        return str
    if t == FD.TYPE_DOUBLE:
        return _double
    if t == FD.TYPE_FLOAT:
        return _float
    if t == FD.TYPE_BYTES:
        return _bytes
    if t == FD.TYPE_ENUM:
        return _enum(f.enum_type)
    return None


def message_converter(desc: _descriptor.Descriptor) -> Converter:
    name = desc.full_name
    if name in STRING_WKT:
        return lambda m: m.ToJsonString()
    if name in WRAPPERS:
        inner = scalar_converter(desc.fields_by_name["value"])
        return (lambda m: inner(m.value)) if inner else (lambda m: m.value)
    if name in GENERIC_WKT:
        return lambda m: json_format.MessageToDict(m, always_print_fields_with_no_presence=True)
    return to_dict


def _plan(desc: _descriptor.Descriptor) -> list[tuple[str, str, Converter, int]]:
    plan = []
    for f in desc.fields:
        flags = 0
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            if value_f.type == FD.TYPE_MESSAGE:
                value_conv = message_converter(value_f.message_type)
            else:
                value_conv = scalar_converter(value_f) or (lambda v: v)
            if key_f.type == FD.TYPE_BOOL:

                def key_conv(k: Any) -> str:
                    return "true" if k else "false"
            else:
                key_conv = str
            plan.append(
                (
                    f.name,
                    f.json_name,
                    lambda m, kc=key_conv, vc=value_conv: {kc(k): vc(v) for k, v in m.items()},
                    _MAP,
                )
            )
            continue
        if f.type == FD.TYPE_MESSAGE:
            conv: Converter | None = message_converter(f.message_type)
        else:
            conv = scalar_converter(f)
        if f.is_repeated:
            flags |= _REPEATED
        elif f.has_presence:
            flags |= _HAS
        plan.append((f.name, f.json_name, conv, flags))  # type: ignore[arg-type]
    return plan


def to_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON dict of ``message``, fields without presence printed when unset."""
    desc = message.DESCRIPTOR
    plan = _plans.get(desc.full_name)
    if plan is None:
        if desc.full_name in STRING_WKT or desc.full_name in WRAPPERS | GENERIC_WKT:
            return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        plan = _plans[desc.full_name] = _plan(desc)
    out: dict[str, Any] = {}
    for name, json_name, conv, flags in plan:
        if flags & _HAS:
            if not message.HasField(name):
                continue
            value = getattr(message, name)
            out[json_name] = conv(value) if conv else value
        elif flags & _MAP:
            out[json_name] = conv(getattr(message, name))
        elif flags & _REPEATED:
            values = getattr(message, name)
            out[json_name] = [conv(v) for v in values] if conv else list(values)
        else:
            value = getattr(message, name)
            out[json_name] = conv(value) if conv else value
    return out
