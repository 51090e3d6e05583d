"""CompatibilityService: which task a dataset (head or snapshot) can train, and the rules."""

from __future__ import annotations

from typing import Any

import grpc

from dataset_svc import compatibility, identity, messages
from dataset_svc.app import App
from dataset_svc.services.datasets import load_document
from dataset_svc.validation import check_enums
from visionmesh import auth, compat, formats
from visionmesh.errors import grpc_errors
from visionmesh.v1 import (
    common_pb2,
    compatibility_pb2,
    compatibility_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)


def trainer_models(trainers: dict[str, str]) -> compatibility.Offered:
    """model name -> (framework, tasks) from every reachable trainer's GetCapabilities (with
    the caller's token, 3 s each); the unreachable ones."""
    token = auth.current_token()
    metadata = auth.bearer_metadata(token) if token else None
    offered: dict[str, tuple[str, list[str]]] = {}
    unreachable = []
    for framework, addr in trainers.items():
        try:
            with grpc.insecure_channel(addr) as channel:
                caps = trainer_pb2_grpc.TrainerServiceStub(channel).GetCapabilities(
                    trainer_pb2.GetCapabilitiesRequest(), timeout=3, metadata=metadata
                )
        except grpc.RpcError:
            unreachable.append(framework)
            continue
        for info in caps.models:
            tasks = [
                formats.normalize_task(common_pb2.TaskType.Name(t))
                for t in info.task_types
                if t in common_pb2.TaskType.values() and t != common_pb2.TASK_TYPE_UNSPECIFIED
            ]
            offered.setdefault(info.name, (caps.framework or framework, tasks))
    return offered, unreachable


@grpc_errors(check_request=check_enums)
class CompatibilityService(compatibility_pb2_grpc.CompatibilityServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    def _report(
        self,
        document: dict[str, Any],
        task_type: int,
        split_seed: int,
        val_fraction: float,
        model: str = "",
    ) -> compatibility_pb2.CompatibilityReport:
        trainers = self.app.settings.base.trainers
        report = compatibility.check(
            document,
            messages.required_task(task_type),
            split_seed=split_seed,
            val_fraction=val_fraction,
            model=model,
            trainer_models=lambda: trainer_models(trainers),
        )
        return messages.compatibility_report(report)

    def CheckCompatibility(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, document = load_document(session, self.app, user, request.dataset, "dataset")
        report = self._report(
            document, request.task_type, request.split_seed, request.val_fraction, request.model
        )
        return compatibility_pb2.CheckCompatibilityResponse(report=report)

    def SummarizeCompatibility(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, document = load_document(session, self.app, user, request.dataset, "dataset")
        reports = [
            self._report(document, task_type, request.split_seed, request.val_fraction)
            for task_type in messages.task_types()
        ]
        return compatibility_pb2.SummarizeCompatibilityResponse(reports=reports)

    def GetConversionMatrix(self, request, context):  # type: ignore[no-untyped-def]
        return messages.conversion_matrix(compat.conversion_rules())
