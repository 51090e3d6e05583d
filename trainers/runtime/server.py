"""The TrainerService every framework's process serves, around one FrameworkAdapter."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from trainers.runtime.adapter import FrameworkAdapter
from visionmesh import config
from visionmesh.server import Service, parse_args, run, service_name
from visionmesh.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc


def task_enum(task: str) -> int:
    return common_pb2.TaskType.Value(f"TASK_TYPE_{task.upper()}")


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, adapter: FrameworkAdapter) -> None:
        self.adapter = adapter

    def GetCapabilities(self, request, context):
        if request.framework and request.framework != self.adapter.framework:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"this trainer serves framework {self.adapter.framework!r}, "
                f"not {request.framework!r}",
            )
        return trainer_pb2.GetCapabilitiesResponse(
            framework=self.adapter.framework,
            framework_version=self.adapter.framework_version(),
            models=[
                trainer_pb2.ModelInfo(
                    name=m.name,
                    task_types=[task_enum(t) for t in m.task_types],
                    family=m.family,
                    description=m.description,
                )
                for m in self.adapter.models()
            ],
            hyperparameters=[
                trainer_pb2.HyperparameterInfo(
                    name=h.name,
                    type=h.type,
                    default_value=h.default,
                    description=h.description,
                    choices=list(h.choices),
                    min_value=h.min_value,
                    max_value=h.max_value,
                    extra=h.extra,
                )
                for h in self.adapter.hyperparameters()
            ],
        )


def main(adapter: FrameworkAdapter, argv: Sequence[str] | None = None) -> int:
    prog = f"trainers.{adapter.framework}"
    args = parse_args(prog, config.DEFAULT_ADDRESSES[adapter.framework], argv)
    service = Service(
        service_name(trainer_pb2, "TrainerService"),
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        TrainerServicer(adapter),
    )
    return run(prog, [service], args.listen, grace=args.grace)
