"""The gateway's fast proto3 JSON equals json_format's on every message type it serves.

Each message type of visionmesh.v1 (and google.rpc.Status) is checked empty and filled:
every scalar set to a non-default value (int64 past 2**53, negative numbers, NaN and
infinities, bytes, unknown enum numbers), repeated fields and maps with two entries,
nested messages two levels deep, Timestamps, FieldMasks and oneofs.
"""

from __future__ import annotations

import math

import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway import jsonfast, routes

FD = _descriptor.FieldDescriptor


def _value(f: FD, i: int) -> object:
    t = f.type
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return [2**60 + 3, -(2**55)][i % 2]
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return 2**63 + i
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return [-7, 2**31 - 1][i % 2]
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return 4000000000 + i
    if t == FD.TYPE_DOUBLE:
        return [0.1, math.nan, -math.inf, 1e300][i % 4]
    if t == FD.TYPE_FLOAT:
        return [0.1, math.inf][i % 2]
    if t == FD.TYPE_BOOL:
        return True
    if t == FD.TYPE_STRING:
        return f"s{i} é \u2603"
    if t == FD.TYPE_BYTES:
        return bytes([0, 255, i, 10])
    if t == FD.TYPE_ENUM:
        values = [v.number for v in f.enum_type.values]
        return [values[-1], 99][i % 2]
    raise AssertionError(t)


def fill(message: Message, depth: int = 0, i: int = 0) -> Message:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.FromJsonString(["2026-11-29T16:00:00.123456Z", "1999-01-01T00:00:00Z"][i % 2])
        return message
    if name == "google.protobuf.FieldMask":
        message.FromJsonString("displayName,visibility")
        return message
    if name == "google.protobuf.Duration":
        message.FromJsonString("1.5s")
        return message
    if name.startswith("google.protobuf.") or depth > 2:
        return message
    seen_oneofs: set[str] = set()
    for f in message.DESCRIPTOR.fields:
        if f.containing_oneof is not None and not f.containing_oneof.name.startswith("_"):
            if f.containing_oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(f.containing_oneof.name)
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key_f = f.message_type.fields_by_name["key"]
            value_f = f.message_type.fields_by_name["value"]
            target = getattr(message, f.name)
            for j in range(2):
                key = _value(key_f, j) if key_f.type != FD.TYPE_BOOL else bool(j)
                if value_f.type == FD.TYPE_MESSAGE:
                    fill(target[key], depth + 1, j)
                else:
                    target[key] = _value(value_f, j)
            continue
        if f.type == FD.TYPE_MESSAGE:
            if f.is_repeated:
                for j in range(2):
                    fill(getattr(message, f.name).add(), depth + 1, j)
            else:
                fill(getattr(message, f.name), depth + 1, i)
                getattr(message, f.name).SetInParent()
            continue
        if f.is_repeated:
            getattr(message, f.name).extend([_value(f, 0), _value(f, 1)])
        else:
            setattr(message, f.name, _value(f, i))
    return message


def message_types() -> list[type[Message]]:
    from google.protobuf import message_factory
    from google.rpc import status_pb2

    out = {}
    for module in routes.service_modules():
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            out[desc.full_name] = message_factory.GetMessageClass(desc)
    out["google.rpc.Status"] = status_pb2.Status
    return [out[k] for k in sorted(out)]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("cls", message_types(), ids=lambda c: c.DESCRIPTOR.full_name)
def test_fast_json_equals_json_format(cls):
    for message in (cls(), fill(cls())):
        expected = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        got = jsonfast.to_dict(message)
        assert _same(got, expected), (got, expected)


def test_status_details_use_json_format_for_any():
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=3, message="bad")
    status.details.add().Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="a.b")]
        )
    )
    assert jsonfast.to_dict(status) == json_format.MessageToDict(
        status, always_print_fields_with_no_presence=True
    )
