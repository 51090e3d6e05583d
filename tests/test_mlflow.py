"""Optional MLflow logging: with VISIONMESH_MLFLOW_URI set, each job logs one MLflow run.

A real timm trainer logs to a local file-store tracking URI; the run is read back with the
MLflow client: the spec as params, every epoch's metrics as StreamMetrics sent them, best.pt
and the evaluation pictures as artifacts. Without mlflow importable the same job succeeds
and its log says why nothing was logged.
"""

from __future__ import annotations

import pytest

from tests._trainers import (
    collect_metrics,
    job_log,
    netguard_env,
    shapes_dataset,
    spec,
    start_trainer,
)
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(600)

S = trainer_pb2


@pytest.fixture(scope="module")
def dataset(fake):
    files, doc = shapes_dataset(12, size=64)
    return fake.add_dataset(files, doc, "alice")


def train(server, fake, dataset):
    stub = server.stub(fake.token("alice"))
    training = spec(dataset, "classify", "test_resnet", epochs=2, batch_size=4, image_size=64)
    job = stub.StartTraining(S.StartTrainingRequest(spec=training), timeout=120).job
    epochs, state = collect_metrics(stub, job.name, timeout=300)
    assert state == S.JOB_STATE_SUCCEEDED, stub.GetJob(S.GetJobRequest(name=job.name)).job.error
    return stub, job, epochs


def test_job_logs_an_mlflow_run(fake, dataset, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is optional: pip install 'visionmesh[mlflow]'")
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path / 'mlruns'}"
    server = start_trainer(
        "timm",
        fake,
        guard_dir=tmp_path / "guard",
        extra_env={"VISIONMESH_MLFLOW_URI": uri, "VISIONMESH_MLFLOW_EXPERIMENT": "shapes"},
    )
    try:
        stub, job, epochs = train(server, fake, dataset)
        assert server.network_attempts() == []
    finally:
        server.stop()

    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shapes")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["visionmesh.job"] == job.name
    assert run.data.tags["visionmesh.trainer"] == "timm"
    assert run.data.tags["visionmesh.state"] == "SUCCEEDED"
    params = run.data.params
    assert params["model"] == "test_resnet" and params["epochs"] == "2"
    assert params["imageSize"] == "64" and params["taskType"] == "TASK_TYPE_IMAGE_CLASSIFICATION"
    for name in ("val/top1", "val/loss", "train/loss"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (e.epoch, pytest.approx(e.values[name])) for e in epochs
        ]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/confusion_matrix.png", "evaluation/pr_curve.png"}
    checkpoints = client.list_artifacts(run.info.run_id, "checkpoints")
    assert [(a.path, a.file_size > 0) for a in checkpoints] == [("checkpoints/best.pt", True)]


def test_without_mlflow_the_job_still_runs(fake, dataset, tmp_path):
    shim = tmp_path / "no-mlflow" / "mlflow"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('mlflow hidden by the test')\n")
    guard = netguard_env(tmp_path / "guard")
    server = start_trainer(
        "timm",
        fake,
        guard_dir=tmp_path / "guard",
        extra_env={
            "VISIONMESH_MLFLOW_URI": f"file://{tmp_path / 'mlruns'}",
            "PYTHONPATH": f"{shim.parent}:{guard['PYTHONPATH']}",
        },
    )
    try:
        stub, job, _ = train(server, fake, dataset)
        assert "VISIONMESH_MLFLOW_URI is set but mlflow is not installed" in job_log(stub, job.name)
        assert not (tmp_path / "mlruns").exists()
    finally:
        server.stop()
