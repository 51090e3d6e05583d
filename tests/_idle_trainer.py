"""A trainer whose framework does nothing: ``python -m tests._idle_trainer --listen HOST:PORT``.

The real trainer runtime (server, queue, job child process, dataset preparation, metric
fan-out) around an adapter whose training loop only waits until the job is stopped. Tests
that need jobs which stay RUNNING or QUEUED for as long as they like (open StreamMetrics
streams, say) use it instead of a framework that would keep both CPUs busy meanwhile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainers.runtime.adapter import (
    OBJECT_DETECTION,
    FrameworkAdapter,
    Hyperparameter,
    JobContext,
    ModelSpec,
    Prediction,
)

FRAMEWORK = "idle"
MODEL = "idle-net"


class IdleAdapter(FrameworkAdapter):
    framework = FRAMEWORK

    def models(self) -> list[ModelSpec]:
        return [ModelSpec(MODEL, (OBJECT_DETECTION,), family="idle", description="waits")]

    def hyperparameters(self) -> list[Hyperparameter]:
        h = Hyperparameter
        return [
            h("epochs", "int", "1", "Epochs", min_value="1"),
            h("batch_size", "int", "1", "Images per step", min_value="1"),
            h("image_size", "int", "32", "Input size", min_value="16"),
            h("learning_rate", "float", "0.01", "Learning rate", min_value="0"),
            h("seed", "int", "0", "Seed"),
            h("patience", "int", "0", "Patience"),
            h("pretrained", "bool", "false", "Pretrained weights"),
        ]

    def dataset_format(self, task_type: str) -> str:
        return "yolo"

    def framework_version(self) -> str:
        return "0"

    def train(self, job: JobContext) -> None:
        job.log("idle: waiting until the job is stopped")
        while not job.should_stop():
            time.sleep(1.0)

    def predict(self, checkpoint: Path, image: bytes, **options: Any) -> Prediction:
        raise NotImplementedError("the idle trainer does not predict")


def main(argv: Sequence[str] | None = None) -> int:
    from trainers.runtime.server import main as serve_trainer

    return serve_trainer(IdleAdapter(), argv)


if __name__ == "__main__":
    from tests._idle_trainer import main as _main  # the adapter by its importable name

    sys.exit(_main())
