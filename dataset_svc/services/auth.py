"""AuthService: Register, Login (a JWT signed with the service's private key), WhoAmI.

Login is throttled per account and per client address (:class:`dataset_svc.users.LoginThrottle`).
"""

from __future__ import annotations

import grpc

from dataset_svc import identity, messages, users
from dataset_svc.app import App
from dataset_svc.validation import check_enums
from visionmesh.errors import ServiceError, grpc_errors
from visionmesh.v1 import auth_pb2, auth_pb2_grpc


@grpc_errors(check_request=check_enums)
class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app
        self.throttle = users.LoginThrottle(
            app.settings.login_max_failures, app.settings.login_client_max_failures
        )

    def Register(
        self, request: auth_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> auth_pb2.RegisterResponse:
        with self.app.catalog.session() as session:
            user = users.register(session, request.username, request.password)
            return auth_pb2.RegisterResponse(user=messages.user(user))

    def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.ServicerContext
    ) -> auth_pb2.LoginResponse:
        client = users.login_client(
            context.peer() or "",
            context.invocation_metadata() or (),
            self.app.settings.trusted_proxies,
        )
        self.throttle.check(request.username, client)
        with self.app.catalog.session() as session:
            try:
                user = users.authenticate(session, request.username, request.password)
            except ServiceError as err:
                if err.code == grpc.StatusCode.UNAUTHENTICATED:
                    self.throttle.failed(request.username, client)
                raise
            self.throttle.succeeded(request.username)
            token, expires = self.app.issuer.issue(
                user.username, ttl_seconds=self.app.settings.token_ttl_seconds
            )
            response = auth_pb2.LoginResponse(
                access_token=token, token_type="Bearer", user=messages.user(user)
            )
            response.expire_time.FromDatetime(expires)
            return response

    def WhoAmI(
        self, request: auth_pb2.WhoAmIRequest, context: grpc.ServicerContext
    ) -> auth_pb2.WhoAmIResponse:
        with self.app.catalog.session() as session:
            return auth_pb2.WhoAmIResponse(user=messages.user(identity.caller(session)))
