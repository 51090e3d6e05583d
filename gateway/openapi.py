"""OpenAPI 3.1 for the gateway, generated from the same routes and descriptors it serves.

Path templates become OpenAPI paths with one parameter per ``*`` (``{name=datasets/*}`` ->
``/v1/datasets/{dataset_id}``); request and response schemas follow the proto3 JSON
mapping (lowerCamel property names, enums as names, 64-bit integers as decimal strings,
Timestamps as RFC 3339 strings); every error is a ``google.rpc.Status``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor as _descriptor

from gateway.routes import Route, Segment, Variable

FD = _descriptor.FieldDescriptor
REF = "#/components/schemas/"
STATUS = "google.rpc.Status"
INT32 = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32}
UINT32 = {FD.TYPE_UINT32, FD.TYPE_FIXED32}
INT64 = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}
WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "pattern": r"^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "pattern": r"^[0-9]+$"},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def message(self, desc: _descriptor.Descriptor) -> dict[str, Any]:
        if desc.full_name in WKT:
            return dict(WKT[desc.full_name])
        name = desc.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursion stops here
            props = {f.json_name: self.field(f) for f in desc.fields}
            self.components[name] = {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
            }
        return {"$ref": REF + name}

    def field(self, f: FD) -> dict[str, Any]:
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        item = self.single(f)
        if f.is_repeated:
            return {"type": "array", "items": item}
        return item

    def single(self, f: FD) -> dict[str, Any]:
        t = f.type
        if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return {"type": "number"}
        if t in INT32:
            return {"type": "integer", "format": "int32"}
        if t in UINT32:
            return {"type": "integer", "minimum": 0, "maximum": 4294967295}
        if t in INT64:
            return {"type": "string", "pattern": r"^-?[0-9]+$", "format": "int64"}
        if t == FD.TYPE_BOOL:
            return {"type": "boolean"}
        if t == FD.TYPE_STRING:
            return {"type": "string"}
        if t == FD.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if t == FD.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        return self.message(f.message_type)


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 1 else word


def openapi_path(route: Route) -> tuple[str, list[dict[str, Any]]]:
    """``/v1/{name=datasets/*}:export`` -> ``/v1/datasets/{dataset_id}:export`` + parameters."""
    out: list[str] = []
    params: list[dict[str, Any]] = []
    used: set[str] = set()

    def param(base: str, description: str) -> str:
        name, n = base, 2
        while name in used:
            name, n = f"{base}{n}", n + 1
        used.add(name)
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description,
                "schema": {"type": "string", "pattern": "^[^/]+$"},
            }
        )
        return "{" + name + "}"

    for part in route.template.parts:
        if isinstance(part, Segment):
            out.append(part.text if part.kind == "literal" else param("segment", part.kind))
            continue
        assert isinstance(part, Variable)
        previous = ""
        for seg in part.segments:
            if seg.kind == "literal":
                out.append(seg.text)
                previous = seg.text
            else:
                base = (
                    f"{_singular(previous)}_id" if previous else part.field_path.replace(".", "_")
                )
                out.append(param(base, f"a segment of {part.field_path}"))
    path = "/" + "/".join(out)
    if route.template.verb:
        path += ":" + route.template.verb
    return path, params


def _query_params(
    schemas: _Schemas,
    desc: _descriptor.Descriptor,
    skip: set[str],
    prefix: str = "",
    seen: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    params = []
    for f in desc.fields:
        path = prefix + f.name
        if path in skip:
            continue
        if f.type == FD.TYPE_MESSAGE and f.message_type.full_name not in WKT:
            if f.is_repeated or f.message_type.full_name in seen or len(seen) >= 3:
                continue
            params += _query_params(
                schemas, f.message_type, skip, path + ".", (*seen, desc.full_name)
            )
            continue
        if f.type == FD.TYPE_MESSAGE and f.message_type.full_name in (
            "google.protobuf.Struct",
            "google.protobuf.Value",
            "google.protobuf.ListValue",
            "google.protobuf.Any",
            "google.protobuf.Empty",
        ):
            continue
        schema = schemas.field(f)
        params.append(
            {
                "name": path,
                "in": "query",
                "required": False,
                "schema": schema,
                **({"style": "form", "explode": True} if f.is_repeated else {}),
            }
        )
    return params


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def operation(schemas: _Schemas, route: Route, op_id: str) -> tuple[str, dict[str, Any]]:
    method = route.method
    path, params = openapi_path(route)
    req = method.request_class.DESCRIPTOR
    op: dict[str, Any] = {
        "operationId": op_id,
        "tags": [method.service.rsplit(".", 1)[-1]],
        "summary": f"{method.service.rsplit('.', 1)[-1]}.{method.name}",
        "parameters": params,
    }
    if method.client_streaming:
        # the upload binding: the path fills the stream's header, files come as multipart
        header = route.template.variables[0].field_path.split(".")[0]
        header_desc = req.fields_by_name[header].message_type
        op["parameters"] += _query_params(schemas, header_desc, {"parent"})
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                },
                            }
                        },
                    }
                }
            },
        }
    elif route.body == "*":
        op["requestBody"] = {"required": False, "content": _json(schemas.message(req))}
    else:
        skip = set(route.bound_canonical)
        if route.body:
            skip.add(route.body)
            body_field = req.fields_by_name[route.body]
            op["requestBody"] = {"required": True, "content": _json(schemas.field(body_field))}
        op["parameters"] += _query_params(schemas, req, skip)
    status = {"$ref": REF + STATUS}
    if method.http_body_response:
        ok = {
            "description": "the bytes (content type from the service)",
            "content": {"application/octet-stream": {}},
        }
    elif method.server_streaming:
        out = schemas.message(method.response_class.DESCRIPTOR)
        ok = {
            "description": "a stream: NDJSON ({result} per line) or Server-Sent Events "
            "(Accept: text/event-stream)",
            "content": {
                "application/x-ndjson": {
                    "schema": {
                        "type": "object",
                        "properties": {"result": out, "error": status},
                    }
                },
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {
            "description": "OK",
            "content": _json(schemas.message(method.response_class.DESCRIPTOR)),
        }
    op["responses"] = {
        "200": ok,
        "default": {"description": "an error (google.rpc.Status)", "content": _json(status)},
    }
    return path, op


def document(routes: list[Route], title: str = "visionmesh gateway") -> dict[str, Any]:
    schemas = _Schemas()
    schemas.components[STATUS] = {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": WKT["google.protobuf.Any"]},
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for route in sorted(routes, key=lambda r: (r.method.service, r.method.name)):
        base = f"{route.method.service.rsplit('.', 1)[-1]}_{route.method.name}"
        counts[base] = counts.get(base, 0) + 1
        op_id = base if counts[base] == 1 else f"{base}{counts[base]}"
        path, op = operation(schemas, route, op_id)
        paths.setdefault(path, {})[route.http_method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "v1",
            "description": "REST/JSON view of the visionmesh gRPC services, generated from "
            "their google.api.http options. Errors are google.rpc.Status JSON.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearer": []}],
    }
