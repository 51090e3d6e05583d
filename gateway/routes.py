"""REST routes read from the ``google.api.http`` options of compiled service descriptors.

Nothing here knows a single RPC by name: :func:`collect_routes` walks every service of the
given ``*_pb2`` modules, reads each method's ``HttpRule`` (and its
``additional_bindings``), and compiles its path template (``{field=a/*/b/*}``, ``*``,
``**``, a trailing ``:verb``) into a matcher. :meth:`Route.build_request` turns a matched
path, the query string and the JSON body into the request message, proto3 JSON style:
``body: "*"`` fills the whole message from the body, ``body: "field"`` that field, no body
leaves every field not bound by the path to the query string (dotted nested names,
lowerCamel or original spelling, repeated keys for repeated fields).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

FD = _descriptor.FieldDescriptor
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
HTTP_BODY = "google.api.HttpBody"
# Well-known types whose JSON form is a string, so a query parameter can carry them.
STRING_WKT = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
}
SCALAR_WKT = {
    "google.protobuf.Int32Value": FD.TYPE_INT32,
    "google.protobuf.UInt32Value": FD.TYPE_UINT32,
    "google.protobuf.FloatValue": FD.TYPE_FLOAT,
    "google.protobuf.DoubleValue": FD.TYPE_DOUBLE,
    "google.protobuf.BoolValue": FD.TYPE_BOOL,
}


class RequestError(ValueError):
    """Bad input from the HTTP side (answered 400 INVALID_ARGUMENT); ``field`` is its path."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


# -- path templates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    kind: str  # "literal", "*", "**"
    text: str = ""


@dataclass(frozen=True)
class Variable:
    field_path: str
    segments: tuple[Segment, ...]


@dataclass
class Template:
    """A parsed grpc-gateway path template."""

    text: str
    parts: list[Segment | Variable]  # one per top-level segment; variables may span several
    verb: str
    regex: re.Pattern[str] = field(init=False)
    variables: list[Variable] = field(init=False)

    def __post_init__(self) -> None:
        pattern, self.variables = [], []
        for i, part in enumerate(self.parts):
            if isinstance(part, Variable):
                group = f"v{len(self.variables)}"
                self.variables.append(part)
                pattern.append(f"(?P<{group}>{_segments_regex(part.segments)})")
            else:
                pattern.append(_segments_regex((part,)))
            del i
        self.regex = re.compile("/" + "/".join(pattern))

    @property
    def literal_count(self) -> int:
        count = 0
        for part in self.parts:
            segs = part.segments if isinstance(part, Variable) else (part,)
            count += sum(s.kind == "literal" for s in segs)
        return count

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {v.field_path: found.group(f"v{i}") for i, v in enumerate(self.variables)}


def _segments_regex(segments: Iterable[Segment]) -> str:
    out = []
    for seg in segments:
        if seg.kind == "literal":
            out.append(re.escape(seg.text))
        elif seg.kind == "*":
            out.append("[^/]+")
        else:
            out.append(".+")
    return "/".join(out)


def _parse_segments(text: str) -> list[Segment]:
    segs = []
    for piece in text.split("/"):
        if piece in ("*", "**"):
            segs.append(Segment(piece))
        elif piece and not any(c in piece for c in "{}=*"):
            segs.append(Segment("literal", piece))
        else:
            raise ValueError(f"bad path segment {piece!r}")
    return segs


def parse_template(text: str) -> Template:
    """Parse ``/v1/{name=datasets/*}:export`` (grpc-gateway / google.api.http syntax)."""
    if not text.startswith("/"):
        raise ValueError(f"path template {text!r} must start with /")
    body, verb = text[1:], ""
    last_slash = body.rfind("/")
    last_brace = body.rfind("}")
    colon = body.rfind(":")
    if colon > max(last_slash, last_brace):
        body, verb = body[:colon], body[colon + 1 :]
    parts: list[Segment | Variable] = []
    i = 0
    while i < len(body):
        if body[i] == "{":
            end = body.index("}", i)
            inner = body[i + 1 : end]
            name, _, sub = inner.partition("=")
            parts.append(Variable(name.strip(), tuple(_parse_segments(sub or "*"))))
            i = end + 1
            if i < len(body):
                if body[i] != "/":
                    raise ValueError(f"bad path template {text!r}")
                i += 1
        else:
            end = body.find("/", i)
            end = len(body) if end < 0 else end
            parts.extend(_parse_segments(body[i:end]))
            i = end + 1
    return Template(text, parts, verb)


def split_verb(path: str) -> tuple[str, str]:
    """``/v1/datasets/x:export`` -> (``/v1/datasets/x``, ``export``)."""
    slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > slash:
        return path[:colon], path[colon + 1 :]
    return path, ""


# -- field paths and values ----------------------------------------------------------------


def find_field(desc: _descriptor.Descriptor, name: str) -> FD | None:
    """A field by its proto name or its lowerCamel JSON name."""
    return desc.fields_by_name.get(name) or next(
        (f for f in desc.fields if f.json_name == name), None
    )


def resolve_path(desc: _descriptor.Descriptor, dotted: str) -> list[FD]:
    chain = []
    for part in dotted.split("."):
        if desc is None:
            raise RequestError(f"{dotted!r} does not name a field", dotted)
        f = find_field(desc, part)
        if f is None:
            raise RequestError(f"no field {part!r} in {desc.name} (from {dotted!r})", dotted)
        chain.append(f)
        desc = f.message_type if f.type == FD.TYPE_MESSAGE else None
    return chain


def _is_repeated(f: FD) -> bool:
    return f.is_repeated


def _is_map(f: FD) -> bool:
    return (
        f.type == FD.TYPE_MESSAGE
        and f.message_type is not None
        and f.message_type.GetOptions().map_entry
    )


def _scalar_json(f_type: int, enum: Any, text: str, where: str) -> Any:
    """A query-string value as the JSON value json_format expects for the field."""
    try:
        if f_type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            if text in ("NaN", "Infinity", "-Infinity"):
                return text
            return float(text)
        if f_type == FD.TYPE_BOOL:
            lowered = text.lower()
            if lowered in ("true", "1", ""):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)
        if f_type == FD.TYPE_ENUM:
            if re.fullmatch(r"-?\d+", text):
                return int(text)
            if enum is not None and text not in enum.values_by_name:
                raise ValueError(text)
            return text
        if f_type in (
            FD.TYPE_INT32,
            FD.TYPE_SINT32,
            FD.TYPE_SFIXED32,
            FD.TYPE_UINT32,
            FD.TYPE_FIXED32,
            FD.TYPE_INT64,
            FD.TYPE_SINT64,
            FD.TYPE_SFIXED64,
            FD.TYPE_UINT64,
            FD.TYPE_FIXED64,
        ):
            return int(text)
    except ValueError:
        raise RequestError(f"invalid value {text!r} for {where}", where) from None
    return text


def query_value(f: FD, values: Sequence[str], where: str) -> Any:
    if f.type == FD.TYPE_MESSAGE:
        full = f.message_type.full_name
        if _is_map(f):
            raise RequestError(f"{where} is a map: send it in the body", where)
        if full in SCALAR_WKT:
            converted = [_scalar_json(SCALAR_WKT[full], None, v, where) for v in values]
        elif full in STRING_WKT:
            converted = list(values)
        else:
            raise RequestError(f"{where} is a message: name its fields ({where}.x=...)", where)
    else:
        converted = [_scalar_json(f.type, f.enum_type, v, where) for v in values]
    if _is_repeated(f):
        return converted
    return converted[-1]


def query_dict(
    desc: _descriptor.Descriptor, params: Sequence[tuple[str, str]], skip: set[str]
) -> dict[str, Any]:
    """Nested JSON dict (proto field names) from ``a.b=1&c=2&c=3``; unknown keys ignored."""
    grouped: dict[str, list[str]] = {}
    for key, value in params:
        grouped.setdefault(key, []).append(value)
    out: dict[str, Any] = {}
    for key, values in grouped.items():
        try:
            chain = resolve_path(desc, key)
        except RequestError:
            continue  # unknown query parameters are ignored (cache busters, tracking ...)
        canonical = ".".join(f.name for f in chain)
        if canonical in skip or any(
            ".".join(f.name for f in chain[: i + 1]) in skip for i in range(len(chain))
        ):
            continue
        if any(_is_repeated(f) for f in chain[:-1]):
            continue  # fields inside repeated messages cannot come from a query string
        node = out
        for f in chain[:-1]:
            node = node.setdefault(f.name, {})
            if not isinstance(node, dict):
                raise RequestError(f"{key} conflicts with another parameter", key)
        node[chain[-1].name] = query_value(chain[-1], values, canonical)
    return out


def set_path_field(msg: Message, chain: list[FD], value: str, where: str) -> None:
    """Set a (possibly nested) field from a path variable."""
    for f in chain[:-1]:
        msg = getattr(msg, f.name)
    leaf = chain[-1]
    if leaf.type == FD.TYPE_STRING:
        setattr(msg, leaf.name, value)
        return
    converted = query_value(leaf, [value], where)
    temp = type(msg)()
    try:
        json_format.ParseDict({leaf.name: converted}, temp)
    except json_format.ParseError as exc:
        raise RequestError(f"invalid value {value!r} for {where}: {exc}", where) from None
    msg.ClearField(leaf.name)
    msg.MergeFrom(temp)


# -- routes --------------------------------------------------------------------------------


@dataclass
class Method:
    """One RPC of a compiled service."""

    service: str  # full name, e.g. visionmesh.v1.DatasetService
    name: str
    descriptor: _descriptor.MethodDescriptor
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def client_streaming(self) -> bool:
        return self.descriptor.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.descriptor.server_streaming

    @property
    def http_body_response(self) -> bool:
        return self.descriptor.output_type.full_name == HTTP_BODY


@dataclass
class Route:
    http_method: str  # upper case
    template: Template
    body: str  # "", "*" or a field name
    method: Method
    bound: set[str] = field(default_factory=set)  # field paths the template binds

    def __post_init__(self) -> None:
        self.bound = {v.field_path for v in self.template.variables}
        self._chains = {
            v.field_path: resolve_path(self.method.request_class.DESCRIPTOR, v.field_path)
            for v in self.template.variables
        }
        # canonical (proto name) paths of bound fields, to keep them out of the query
        self.bound_canonical = {".".join(f.name for f in chain) for chain in self._chains.values()}
        if self.body not in ("", "*"):
            resolve_path(self.method.request_class.DESCRIPTOR, self.body)

    def build_request(
        self,
        path_values: dict[str, str],
        query: Sequence[tuple[str, str]],
        body: Any,
    ) -> Message:
        """The request message from path values, query parameters and the parsed JSON body."""
        msg = self.method.request_class()
        desc = msg.DESCRIPTOR
        try:
            if self.body == "*":
                if body is not None:
                    if not isinstance(body, dict):
                        raise RequestError("the body must be a JSON object")
                    json_format.ParseDict(body, msg)
            else:
                skip = set(self.bound_canonical)
                if self.body:
                    skip.add(".".join(f.name for f in resolve_path(desc, self.body)))
                if query:
                    json_format.ParseDict(query_dict(desc, query, skip), msg)
                if self.body and body is not None:
                    chain = resolve_path(desc, self.body)
                    nested: Any = body
                    for f in reversed(chain):
                        nested = {f.name: nested}
                    json_format.ParseDict(nested, msg)
        except json_format.ParseError as exc:
            raise RequestError(str(exc)) from None
        for field_path, value in path_values.items():  # the ASGI path is already decoded
            set_path_field(msg, self._chains[field_path], value, field_path)
        return msg


def service_modules(package: str = "visionmesh.v1") -> list[ModuleType]:
    """Every ``*_pb2`` module of a package of generated stubs."""
    pkg = importlib.import_module(package)
    return [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(pkg.__path__)
        if info.name.endswith("_pb2")
    ]


def methods_of(modules: Iterable[ModuleType]) -> list[Method]:
    out = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for md in service.methods:
                out.append(
                    Method(
                        service.full_name,
                        md.name,
                        md,
                        message_factory.GetMessageClass(md.input_type),
                        message_factory.GetMessageClass(md.output_type),
                    )
                )
    return out


def http_rules(md: _descriptor.MethodDescriptor) -> list[http_pb2.HttpRule]:
    options = md.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def routes_for(method: Method) -> list[Route]:
    routes = []
    for rule in http_rules(method.descriptor):
        kind = rule.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            verb, text = rule.custom.kind.upper(), rule.custom.path
        else:
            verb, text = kind.upper(), getattr(rule, kind)
        routes.append(Route(verb, parse_template(text), rule.body, method))
    return routes


def collect_routes(modules: Iterable[ModuleType]) -> list[Route]:
    """Every annotated route of every service in ``modules``, most specific first."""
    routes = [r for m in methods_of(modules) for r in routes_for(m)]
    routes.sort(key=lambda r: (-r.template.literal_count, -len(r.template.parts)))
    return routes


class Router:
    """Finds the route of (HTTP method, path); distinguishes 404 from 405."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._by_verb: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_verb.setdefault(route.template.verb, []).append(route)

    def match(self, http_method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path values, path_known): path_known is True when only the method differs."""
        base, verb = split_verb(path)
        known = False
        for candidate_verb, full in ((verb, base), ("", path)) if verb else (("", base),):
            for route in self._by_verb.get(candidate_verb, ()):
                values = route.template.match(full)
                if values is None:
                    continue
                if route.http_method == http_method:
                    return route, values, True
                known = True
        return None, {}, known
