"""visionmesh.errors: one error type and one decorator for every service, over real gRPC.

The handlers live in tests/_errors_service.py, served by a child process on a loopback port:
a ServiceError answers its code, message and google.rpc.BadRequest field paths (read back
with bad_request_fields, as clients and tests do); anything else answers INTERNAL without its
text (the server log has the traceback); a stream that fails after some messages delivers
those messages and then the error. The gateway's side: the HTTP status table and the JSON
body built from the same call's trailing metadata.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from tests._errors_service import SECRET, Errors
from tests._servers import start_server
from visionmesh import errors
from visionmesh.errors import ServiceError, bad_request_fields

pytestmark = pytest.mark.timeout(120)

SERVICES = ("visionmesh.test.Errors", "visionmesh.test.Solo")


@pytest.fixture(scope="module")
def server():
    proc = start_server("tests._errors_service")
    channel = proc.channel()
    yield proc, channel
    channel.close()
    proc.stop()


def ask(channel: grpc.Channel, text: str, service: str = SERVICES[0]) -> str:
    call = channel.unary_unary(
        f"/{service}/Ask",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    return call(StringValue(value=text), timeout=10).value


def count(channel: grpc.Channel, text: str) -> tuple[list[str], grpc.RpcError | None]:
    """The messages a Count stream delivered, and the error it ended with (None: OK)."""
    call = channel.unary_stream(
        f"/{SERVICES[0]}/Count",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    got: list[str] = []
    try:
        for reply in call(StringValue(value=text), timeout=10):
            got.append(reply.value)
    except grpc.RpcError as err:
        return got, err
    return got, None


def refused(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    return err.value


@pytest.mark.parametrize("service", SERVICES)  # class form and method form
def test_unary_service_errors_answer_code_message_and_fields(server, service):
    _, channel = server
    assert ask(channel, "ok", service) == "answered ok"

    err = refused(ask, channel, "not_found", service)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "widget w1 not found"
    assert bad_request_fields(err) == {}

    err = refused(ask, channel, "field", service)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "spec.device 'cuda:0': no CUDA device"
    assert bad_request_fields(err) == {"spec.device": "spec.device 'cuda:0': no CUDA device"}

    err = refused(ask, channel, "fields", service)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "2 fields are wrong"
    assert bad_request_fields(err) == {
        "annotations[17].bbox": "bbox needs 4 numbers",
        "dataset.display_name": "must not be empty",
    }
    assert list(bad_request_fields(err)) == ["annotations[17].bbox", "dataset.display_name"]


@pytest.mark.parametrize("service", SERVICES)
def test_an_unexpected_exception_is_internal_and_its_text_stays_in_the_server_log(server, service):
    proc, channel = server
    err = refused(ask, channel, "crash", service)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error in Ask; the server log has the details"
    leaked = repr(err.trailing_metadata()) + err.debug_error_string()
    assert "SECRET" not in err.details() + leaked and "Traceback" not in leaked
    assert bad_request_fields(err) == {}
    log = proc.log()
    assert "Ask failed" in log and "Traceback" in log and SECRET in log, log[-2000:]


def test_the_request_check_runs_before_the_handler(server):
    _, channel = server
    err = refused(ask, channel, "refused")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "refused by the request check"
    assert bad_request_fields(err) == {"value": "refused by the request check"}
    # the method-form handler was given no check
    assert ask(channel, "refused", SERVICES[1]) == "answered refused"


def test_a_stream_maps_errors_before_and_after_its_first_message(server):
    _, channel = server
    assert count(channel, "3:") == (["0", "1", "2"], None)

    got, err = count(channel, "0:not_found")  # before any message
    assert got == [] and err is not None
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "widget w1 not found"

    got, err = count(channel, "3:fields")  # mid-stream: the messages sent stay delivered
    assert got == ["0", "1", "2"] and err is not None
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(bad_request_fields(err)) == ["annotations[17].bbox", "dataset.display_name"]

    got, err = count(channel, "2:crash")
    assert got == ["0", "1"] and err is not None
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error in Count; the server log has the details"
    assert "SECRET" not in repr(err.trailing_metadata())

    got, err = count(channel, "refused")  # the request check also guards streams
    assert got == [] and err is not None
    assert bad_request_fields(err) == {"value": "refused by the request check"}


def test_the_gateway_body_of_a_failed_call_keeps_its_field_paths(server):
    _, channel = server
    err = refused(ask, channel, "fields")
    assert errors.http_status(err.code()) == 400
    body = errors.error_body(err.code(), err.details(), err.trailing_metadata())
    assert body["code"] == 3 and body["message"] == "2 fields are wrong"
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in detail["fieldViolations"]] == [
        "annotations[17].bbox",
        "dataset.display_name",
    ]
    err = refused(ask, channel, "not_found")
    assert errors.http_status(err.code()) == 404
    assert errors.error_body(err.code(), err.details(), err.trailing_metadata()) == {
        "code": 5,
        "message": "widget w1 not found",
        "details": [],
    }


def test_http_status_table_is_grpc_gateways():
    expected = {
        "OK": 200,
        "CANCELLED": 499,
        "INVALID_ARGUMENT": 400,
        "FAILED_PRECONDITION": 400,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "ABORTED": 409,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "RESOURCE_EXHAUSTED": 429,
        "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
        "INTERNAL": 500,
    }
    for name, status in expected.items():
        assert errors.http_status(grpc.StatusCode[name]) == status, name
    assert set(errors.HTTP_STATUS) == set(grpc.StatusCode)


def test_service_error_takes_a_code_or_its_name():
    by_name = ServiceError("NOT_FOUND", "gone", "name")
    by_code = ServiceError(grpc.StatusCode.NOT_FOUND, "gone", "name")
    assert by_name.code is by_code.code is grpc.StatusCode.NOT_FOUND
    assert by_name.violations == by_code.violations == [("name", "gone")]
    assert str(by_name) == by_name.message == "gone"
    both = ServiceError("INVALID_ARGUMENT", "bad", "a", violations=[("b", "why b")])
    assert both.violations == [("a", "bad"), ("b", "why b")]
    assert errors.invalid_argument("bad", "a", "why a").violations == [("a", "why a")]
    assert errors.already_exists("taken", "dataset.name").violations == [("dataset.name", "taken")]
    assert errors.not_found("gone").violations == []
    with pytest.raises(KeyError):
        ServiceError("NO_SUCH_CODE", "x")


def test_the_class_form_wraps_rpcs_only():
    assert getattr(Errors.Ask, "__grpc_errors__", False)
    assert getattr(Errors.Count, "__grpc_errors__", False)
    assert not hasattr(Errors.helper, "__grpc_errors__")
    assert errors.grpc_errors(Errors.Ask) is Errors.Ask  # wrapping twice changes nothing
