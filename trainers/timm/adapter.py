"""The timm adapter (framework mapping only; the runtime does the rest)."""

from __future__ import annotations

from trainers.runtime.adapter import FrameworkAdapter


class TimmAdapter(FrameworkAdapter):
    framework = "timm"

    def models(self):
        return []

    def hyperparameters(self):
        return []

    def dataset_format(self, task_type):
        raise NotImplementedError("training is not built yet for timm")

    def train(self, job):
        raise NotImplementedError("training is not built yet for timm")

    def predict(self, checkpoint, image, **options):
        raise NotImplementedError("prediction is not built yet for timm")
