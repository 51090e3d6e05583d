"""An annotated RPC in a proto the gateway has never seen gets its REST route, unchanged.

The test writes a small proto (path templates with ``{field=a/*}`` and ``**``, a body
field, ``additional_bindings``, a server stream), compiles it with grpc_tools.protoc into a
temporary folder, serves it from a tiny real gRPC server in a child process and points a
gateway at it through ``VISIONMESH_GATEWAY_EXTRA``. Nothing in gateway/ names it. The same
server shows that a disconnecting HTTP client cancels the upstream stream and that rich
error details (google.rpc.BadRequest) reach the client with their field paths.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from tests._gateway import sse_events, start_gateway
from tests._servers import ROOT, child_env

pytestmark = pytest.mark.timeout(300)

PROTO = """
syntax = "proto3";
package gwtest.v1;
import "google/api/annotations.proto";
import "google/protobuf/timestamp.proto";

service EchoService {
  rpc Echo(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {
      get: "/v1/{name=echoes/*}:echo"
      additional_bindings { post: "/v1/{name=shouts/**}:echo" body: "note" }
    };
  }
  rpc Ticks(TicksRequest) returns (stream Tick) {
    option (google.api.http) = {get: "/v1/{name=echoes/*}/ticks"};
  }
}
enum Mood { MOOD_UNSPECIFIED = 0; MOOD_HAPPY = 1; MOOD_GRUMPY = 2; }
message Note { string text = 1; int64 big = 2; Mood mood = 3; }
message EchoRequest {
  string name = 1;
  Note note = 2;
  repeated string tags = 3;
  bool loud = 4;
  google.protobuf.Timestamp when = 5;
  double ratio = 6;
}
message EchoResponse { EchoRequest request = 1; string authorization = 2; }
message TicksRequest { string name = 1; int32 count = 2; }
message Tick { int32 n = 1; }
"""

SERVER = """
import sys, time, threading
from concurrent import futures
import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from gwtest.v1 import echo_pb2, echo_pb2_grpc

LOG = sys.argv[1]

class Echo(echo_pb2_grpc.EchoServiceServicer):
    def Echo(self, request, context):
        if request.note.text == "fail":
            detail = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="note.text", description="fail is not a note")])
            status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="bad note")
            status.details.add().Pack(detail)
            context.abort_with_status(rpc_status.to_status(status))
        auth = dict(context.invocation_metadata()).get("authorization", "")
        return echo_pb2.EchoResponse(request=request, authorization=auth)

    def Ticks(self, request, context):
        done = threading.Event()
        context.add_callback(done.set)
        n = 0
        while not done.is_set() and (request.count == 0 or n < request.count):
            n += 1
            yield echo_pb2.Tick(n=n)
            time.sleep(0.05)
        with open(LOG, "a") as f:
            state = "finished" if context.is_active() else "cancelled"
            f.write(f"{state} count={request.count} after={n}\\n")

server = grpc.server(futures.ThreadPoolExecutor(8))
echo_pb2_grpc.add_EchoServiceServicer_to_server(Echo(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(f"echo serving on 127.0.0.1:{port}", flush=True)
server.wait_for_termination()
"""


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("extra-proto")
    (root / "gwtest" / "v1").mkdir(parents=True)
    (root / "gwtest" / "v1" / "echo.proto").write_text(PROTO)
    (root / "server.py").write_text(textwrap.dedent(SERVER))
    args = [
        "protoc",
        f"-I{root}",
        f"-I{ROOT / 'third_party' / 'googleapis'}",
        f"-I{protoc.__file__.rsplit('/', 1)[0]}/_proto",
        f"--python_out={root}",
        f"--grpc_python_out={root}",
        str(root / "gwtest" / "v1" / "echo.proto"),
    ]
    assert protoc.main(args) == 0
    log = root / "calls.log"
    env = child_env({"PYTHONPATH": f"{root}:{child_env()['PYTHONPATH']}"})
    proc = subprocess.Popen(
        [sys.executable, str(root / "server.py"), str(log)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    found = re.search(r"serving on (\S+)", line)
    assert found, line
    gateway = start_gateway(
        "127.0.0.1:9",
        {},
        extra_env={
            "PYTHONPATH": env["PYTHONPATH"],
            "VISIONMESH_GATEWAY_EXTRA": f"gwtest.v1.echo_pb2={found.group(1)}",
            "VISIONMESH_GATEWAY_CORS_ORIGINS": "http://ui.example",
        },
    )
    try:
        yield gateway, log
    finally:
        gateway.stop()
        proc.kill()
        proc.wait()


def test_test_only_proto_gets_its_routes(echo):
    gateway, _ = echo
    with gateway.client("tok") as http:
        reply = http.get(
            "/v1/echoes/e1:echo",
            params=[
                ("note.text", "hi"),
                ("note.big", "9007199254740993"),
                ("note.mood", "MOOD_HAPPY"),
                ("tags", "a"),
                ("tags", "b"),
                ("loud", "true"),
                ("when", "2026-01-02T03:04:05Z"),
                ("ratio", "0.5"),
            ],
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["authorization"] == "Bearer tok"  # passed through as metadata
        assert body["request"] == {
            "name": "echoes/e1",
            "note": {"text": "hi", "big": "9007199254740993", "mood": "MOOD_HAPPY"},
            "tags": ["a", "b"],
            "loud": True,
            "when": "2026-01-02T03:04:05Z",
            "ratio": 0.5,
        }
        camel = http.get("/v1/echoes/e2:echo", params={"note.mood": "2"}).json()
        assert camel["request"]["note"]["mood"] == "MOOD_GRUMPY"
        # additional binding: ** spans slashes, the body fills one field
        shout = http.post("/v1/shouts/a/b/c:echo", json={"text": "hey", "big": 5})
        assert shout.status_code == 200, shout.text
        assert shout.json()["request"]["name"] == "shouts/a/b/c"
        assert shout.json()["request"]["note"] == {
            "text": "hey",
            "big": "5",
            "mood": "MOOD_UNSPECIFIED",
        }
        bad = http.get("/v1/echoes/e1:echo", params={"note.mood": "MOOD_SAD"})
        assert bad.status_code == 400
        assert bad.json()["details"][0]["fieldViolations"][0]["field"] == "note.mood"
        doc = http.get("/openapi.json").json()
        assert "get" in doc["paths"]["/v1/echoes/{echoe_id}:echo"]
        assert any(p.startswith("/v1/shouts/") and "post" in v for p, v in doc["paths"].items())


def test_rich_error_details_keep_their_field_paths(echo):
    gateway, _ = echo
    with gateway.client() as http:
        reply = http.post("/v1/shouts/x:echo", json={"text": "fail"})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 3 and body["message"] == "bad note"
    [detail] = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    [violation] = detail["fieldViolations"]
    assert (violation["field"], violation["description"]) == ("note.text", "fail is not a note")


def test_streams_as_ndjson_and_sse_and_a_disconnect_cancels_upstream(echo):
    gateway, log = echo
    with gateway.client() as http:
        lines = http.get("/v1/echoes/e1/ticks", params={"count": 3}).text.splitlines()
        assert [json.loads(x) for x in lines] == [{"result": {"n": n}} for n in (1, 2, 3)]
        with http.stream(
            "GET",
            "/v1/echoes/e1/ticks",
            params={"count": 3},
            headers={"Accept": "text/event-stream"},
        ) as reply:
            events = sse_events(reply.iter_lines())
        assert [(e.get("id"), e["data"]) for e in events if e["data"]] == [
            ("1", '{"n":1}'),
            ("2", '{"n":2}'),
            ("3", '{"n":3}'),
        ]
        with http.stream(
            "GET",
            "/v1/echoes/e1/ticks",
            params={"count": 5},
            headers={"Accept": "text/event-stream", "Last-Event-ID": "3"},
        ) as reply:
            events = sse_events(reply.iter_lines())
        assert [e["id"] for e in events if e["data"]] == ["4", "5"]  # resumed, no duplicates
        with http.stream(
            "GET", "/v1/echoes/e1/ticks", headers={"Accept": "text/event-stream"}
        ) as r:
            for line in r.iter_lines():
                if line.startswith("id: 3"):
                    break  # leave after three ticks of an endless stream (count=0)
    deadline = time.monotonic() + 20
    endless: list[str] = []
    while time.monotonic() < deadline and not endless:
        lines = log.read_text().splitlines() if log.exists() else []
        endless = [x for x in lines if "count=0 " in x]
        time.sleep(0.1)
    assert len(endless) == 1 and endless[0].startswith("cancelled"), log.read_text()


def test_unrouted_backends_and_unknown_routes(echo):
    gateway, _ = echo
    reply = httpx.get(gateway.url + "/v1/datasets", timeout=30)  # dataset_svc is not running
    assert reply.status_code == 503 and reply.json()["code"] == 14
    assert httpx.get(gateway.url + "/v1/echoes/a/b:echo", timeout=30).status_code == 404


def test_cors_is_configured_by_env(echo):
    gateway, _ = echo
    with gateway.client() as http:
        preflight = http.options(
            "/v1/echoes/e1:echo",
            headers={
                "Origin": "http://ui.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://ui.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        simple = http.get("/v1/echoes/e1:echo", headers={"Origin": "http://ui.example"})
        assert simple.headers["access-control-allow-origin"] == "http://ui.example"
        other = http.get("/v1/echoes/e1:echo", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
