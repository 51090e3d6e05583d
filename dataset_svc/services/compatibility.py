"""CompatibilityService: which task a dataset (head or snapshot) can train, and the rules."""

from __future__ import annotations

from dataset_svc import compatibility, identity
from dataset_svc.app import App
from dataset_svc.services.datasets import load_document
from dataset_svc.validation import check_enums
from visionmesh.errors import grpc_errors
from visionmesh.v1 import common_pb2, compatibility_pb2, compatibility_pb2_grpc


@grpc_errors(check_request=check_enums)
class CompatibilityService(compatibility_pb2_grpc.CompatibilityServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    def CheckCompatibility(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, document = load_document(session, self.app, user, request.dataset, "dataset")
        report = compatibility.check(document, request, self.app.settings.base.trainers)
        return compatibility_pb2.CheckCompatibilityResponse(report=report)

    def SummarizeCompatibility(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, document = load_document(session, self.app, user, request.dataset, "dataset")
        reports = [
            compatibility.check(
                document,
                compatibility_pb2.CheckCompatibilityRequest(
                    dataset=request.dataset,
                    task_type=task_type,
                    split_seed=request.split_seed,
                    val_fraction=request.val_fraction,
                ),
                self.app.settings.base.trainers,
            )
            for task_type in common_pb2.TaskType.values()
            if task_type != common_pb2.TASK_TYPE_UNSPECIFIED
        ]
        return compatibility_pb2.SummarizeCompatibilityResponse(reports=reports)

    def GetConversionMatrix(self, request, context):  # type: ignore[no-untyped-def]
        return compatibility.matrix()
