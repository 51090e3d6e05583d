"""Optional MLflow logging of a job (off by default; the services work without mlflow).

With ``VISIONMESH_MLFLOW_URI`` set (any tracking URI mlflow takes: ``file:///path``,
``sqlite:///mlflow.db``, ``http://mlflow:5000``), each job's worker logs one MLflow run in
the experiment ``VISIONMESH_MLFLOW_EXPERIMENT`` (default ``visionmesh``): the resolved
spec as params, every epoch's metrics (step = epoch), and at the end best.pt and the
evaluation pictures as artifacts, tagged with the job's name, trainer and final state.
When the variable is set but mlflow is not installed, the job log says so and training
goes on unlogged. Install with ``pip install 'visionmesh[mlflow]'`` (mlflow-skinny, the
client without the server). A ``file:`` URI sets ``MLFLOW_ALLOW_FILE_STORE=true`` (MLflow 3
keeps its file store behind that switch).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

URI_ENV = "VISIONMESH_MLFLOW_URI"
EXPERIMENT_ENV = "VISIONMESH_MLFLOW_EXPERIMENT"
_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[_BAD.sub("_", prefix)] = str(value)[:6000]


class Tracker:
    """One job's MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.client: Any = None
        self.run_id = ""

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def start(self, *, job_name: str, framework: str, spec: Mapping[str, Any]) -> None:
        uri = os.environ.get(URI_ENV, "").strip()
        if not uri:
            return
        # no usage telemetry leaves this machine (MLflow 3 sends some unless told not to)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            self.log(
                f"[visionmesh] {URI_ENV} is set but mlflow is not installed "
                "(pip install 'visionmesh[mlflow]'): not logging to MLflow"
            )
            return
        if uri.startswith(("file:", "/", ".")):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a file
            # URI set on purpose means the user wants it.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            client = MlflowClient(tracking_uri=uri)
            name = os.environ.get(EXPERIMENT_ENV, "").strip() or "visionmesh"
            experiment = client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id if experiment else client.create_experiment(name)
            )
            run = client.create_run(
                experiment_id,
                run_name=job_name.rsplit("/", 1)[-1],
                tags={"visionmesh.job": job_name, "visionmesh.trainer": framework},
            )
            params: dict[str, str] = {}
            _flatten("", dict(spec), params)
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=items[i : i + 100])
        except Exception as exc:  # tracking must never fail the job
            self.log(f"[visionmesh] MLflow at {uri} unusable, not logging: {exc}")
            return
        self.client = client
        self.run_id = run.info.run_id
        self.log(f"[visionmesh] logging to MLflow run {self.run_id} at {uri}")

    def epoch(self, epoch: int, values: Mapping[str, float], extra: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [
            Metric(_BAD.sub("_", k), float(v), stamp, int(epoch))
            for k, v in {**values, **extra}.items()
        ]
        try:
            self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:
            self.log(f"[visionmesh] MLflow: epoch {epoch} not logged: {exc}")

    def finish(self, state: str, artifacts: list[tuple[Path, str]]) -> None:
        """Log ``(file, artifact folder)`` pairs, then end the run as ``state``."""
        if not self.enabled:
            return
        for path, folder in artifacts:
            try:
                if Path(path).is_file():
                    self.client.log_artifact(self.run_id, str(path), folder or None)
            except Exception as exc:
                self.log(f"[visionmesh] MLflow: artifact {Path(path).name} not logged: {exc}")
        try:
            self.client.set_tag(self.run_id, "visionmesh.state", state)
            self.client.set_terminated(
                self.run_id, "FINISHED" if state == "SUCCEEDED" else "FAILED"
            )
        except Exception as exc:
            self.log(f"[visionmesh] MLflow: run not closed: {exc}")
        self.client = None
