"""GetEvaluation: per-class metrics, confusion matrix, PR curves and pictures of a finished job.

Real trainers on the shapes dataset (64 px). The YOLO job is evaluated by ultralytics' own
validator; the hf detection job by pycocotools, which this test re-runs independently on
the predictions Predict returns for every val image and compares per class (within 0.01)
and overall against the job's own normalized val/map50; the timm job's confusion matrix
must count every val image once.
"""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from tests._trainers import collect_metrics, shapes_dataset, spec, start_trainer
from visionmesh.v1 import common_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2


@pytest.fixture(scope="module")
def shapes():
    return shapes_dataset(16, size=64)


@pytest.fixture(scope="module")
def dataset(fake, shapes):
    files, doc = shapes
    return fake.add_dataset(files, doc, "alice")


def train(stub, dataset, task, model, **fields):
    fields = {"batch_size": 4, "image_size": 64, "epochs": 2, **fields}
    job = stub.StartTraining(
        S.StartTrainingRequest(spec=spec(dataset, task, model, **fields)), timeout=120
    ).job
    _, state = collect_metrics(stub, job.name, timeout=600)
    job = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, job.error
    return job


def evaluation_of(stub, job):
    return stub.GetEvaluation(
        S.GetEvaluationRequest(name=f"{job.name}/evaluation"), timeout=30
    ).evaluation


def check_pictures(evaluation, expected):
    assert sorted(p.filename for p in evaluation.pictures) == sorted(expected)
    for picture in evaluation.pictures:
        assert picture.content_type == "image/png"
        with Image.open(io.BytesIO(picture.data)) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 200


def test_yolo_detection_evaluation(fake, dataset, tmp_path_factory):
    server = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard"))
    try:
        stub = server.stub(fake.token("alice"))
        job = train(stub, dataset, "detect", "yolo11n")
        ev = evaluation_of(stub, job)
        assert ev.name == f"{job.name}/evaluation" and ev.checkpoint == "best.pt"
        assert ev.task_type == common_pb2.TASK_TYPE_OBJECT_DETECTION
        assert {"val/map50", "val/map50_95", "val/precision", "val/recall"} <= set(ev.metrics)
        assert [(c.category_id, c.category_name) for c in ev.classes] == [
            (1, "circle"),
            (2, "square"),
            (3, "triangle"),
        ]
        for c in ev.classes:
            assert {"ap50", "ap50_95", "precision", "recall"} <= set(c.values)
            assert 0 <= c.values["ap50_95"] <= c.values["ap50"] <= 1
        # every val box is counted once per class
        files, doc = shapes_dataset(16, size=64)
        val_ids = {im["id"] for im in doc["images"] if im["split"] == "val"}
        want = {cid: 0 for cid in (1, 2, 3)}
        for ann in doc["annotations"]:
            if ann["image_id"] in val_ids:
                want[ann["category_id"]] += 1
        assert {c.category_id: c.instance_count for c in ev.classes} == want
        cm = ev.confusion_matrix
        assert list(cm.labels) == ["circle", "square", "triangle", "background"]
        assert len(cm.rows) == 4 and all(len(r.counts) == 4 for r in cm.rows)
        # each true box is either matched to a class or missed (background column)
        assert [sum(cm.rows[i].counts) for i in range(3)] == [want[1], want[2], want[3]]
        check_pictures(ev, ["confusion_matrix.png", "pr_curve.png"])
        for curve in ev.pr_curves:
            assert len(curve.recall) == len(curve.precision) == 101
        log = "\n".join(
            line
            for reply in stub.StreamLogs(S.StreamLogsRequest(name=job.name), timeout=30)
            for line in reply.lines
        )
        assert "[visionmesh] evaluation of best.pt on val" in log
        assert server.network_attempts() == []
    finally:
        server.stop()


def test_hf_detection_evaluation_matches_pycocotools(fake, dataset, shapes, tmp_path_factory):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    server = start_trainer("hf", fake, guard_dir=tmp_path_factory.mktemp("guard-hf"))
    try:
        stub = server.stub(fake.token("alice"))
        job = train(stub, dataset, "detect", "detr-micro", epochs=3, learning_rate=0.0005)
        ev = evaluation_of(stub, job)
        files, doc = shapes
        val_images = [im for im in doc["images"] if im["split"] == "val"]
        val_ids = {im["id"] for im in val_images}
        detections = []
        for image in val_images:
            reply = stub.Predict(
                S.PredictRequest(
                    name=job.name,
                    image=files[image["file_name"]],
                    confidence_threshold=1e-12,
                    max_detections=100,
                ),
                timeout=120,
            )
            for det in reply.detections:
                detections.append(
                    {
                        "image_id": image["id"],
                        "category_id": int(det.category_id),
                        "bbox": [det.box.x, det.box.y, det.box.width, det.box.height],
                        "score": det.score,
                    }
                )
        gt = COCO()
        gt.dataset = {
            "images": [{k: im[k] for k in ("id", "width", "height")} for im in val_images],
            "categories": doc["categories"],
            "annotations": [
                {**a, "area": a["bbox"][2] * a["bbox"][3]}
                for a in doc["annotations"]
                if a["image_id"] in val_ids
            ],
        }
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(json.loads(json.dumps(detections))), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        precision = coco_eval.eval["precision"]
        print("ours:", dict(ev.metrics))
        for k, cat in enumerate(coco_eval.params.catIds):
            p50 = precision[0, :, k, 0, -1]
            ref = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
            ours = next(c for c in ev.classes if c.category_id == cat)
            print(
                f"class {ours.category_name}: ours ap50 {ours.values['ap50']:.4f}, "
                f"pycocotools {ref:.4f}"
            )
            assert abs(ours.values["ap50"] - ref) <= 0.01
        ref_map50 = max(0.0, float(coco_eval.stats[1]))
        print(
            f"val/map50: job {job.best_metrics['val/map50']:.4f}, evaluation "
            f"{ev.metrics['val/map50']:.4f}, pycocotools {ref_map50:.4f}"
        )
        assert abs(ev.metrics["val/map50"] - ref_map50) <= 0.01
        assert abs(job.best_metrics["val/map50"] - ref_map50) <= 0.01
        check_pictures(ev, ["confusion_matrix.png", "pr_curve.png"])
        assert list(ev.confusion_matrix.labels)[-1] == "background"
    finally:
        server.stop()


def test_timm_classification_evaluation(fake, dataset, tmp_path_factory):
    server = start_trainer("timm", fake, guard_dir=tmp_path_factory.mktemp("guard-timm"))
    try:
        stub = server.stub(fake.token("alice"))
        with pytest.raises(grpc.RpcError) as err:
            stub.GetEvaluation(
                S.GetEvaluationRequest(name="trainers/timm/jobs/nosuchjob/evaluation"), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        job = train(stub, dataset, "classify", "test_resnet")
        ev = evaluation_of(stub, job)
        assert abs(ev.metrics["val/top1"] - job.best_metrics["val/top1"]) < 1e-6
        matrix = np.array([list(r.counts) for r in ev.confusion_matrix.rows])
        assert matrix.shape == (3, 3)
        assert matrix.sum() == sum(c.instance_count for c in ev.classes) == 4
        assert abs(np.trace(matrix) / matrix.sum() - ev.metrics["val/top1"]) < 1e-6
        for c in ev.classes:
            assert {"precision", "recall", "accuracy"} <= set(c.values)
        check_pictures(ev, ["confusion_matrix.png", "pr_curve.png"])
        bob = server.stub(fake.token("bob"))
        with pytest.raises(grpc.RpcError) as err:
            bob.GetEvaluation(S.GetEvaluationRequest(name=f"{job.name}/evaluation"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_per_class_ap_matches_pycocotools_per_category_runs(shapes):
    """Our per-class AP (sliced from one COCOeval) equals COCOeval run on each category
    alone, on imperfect predictions (jittered boxes, wrong classes, spurious boxes)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from trainers.runtime.evaluation import coco_detection_report

    _, doc = shapes
    rng = np.random.default_rng(1)
    gt_doc = {
        "images": [{k: im[k] for k in ("id", "width", "height")} for im in doc["images"]],
        "categories": doc["categories"],
        "annotations": [{**a, "area": a["bbox"][2] * a["bbox"][3]} for a in doc["annotations"]],
    }
    detections = []
    for ann in doc["annotations"]:
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 0.12 * max(w, h), 4)
        cat = ann["category_id"] if rng.random() > 0.2 else int(rng.integers(1, 4))
        detections.append(
            {
                "image_id": ann["image_id"],
                "category_id": cat,
                "bbox": [
                    x + jitter[0],
                    y + jitter[1],
                    max(w + jitter[2], 1),
                    max(h + jitter[3], 1),
                ],
                "score": float(rng.random()),
            }
        )
    for _ in range(10):
        detections.append(
            {
                "image_id": int(rng.integers(1, 17)),
                "category_id": int(rng.integers(1, 4)),
                "bbox": [float(v) for v in rng.uniform(0, 40, 2)] + [12.0, 12.0],
                "score": float(rng.random()),
            }
        )
    report = coco_detection_report(gt_doc, detections, [1, 2, 3])
    gt = COCO()
    gt.dataset = json.loads(json.dumps(gt_doc))
    gt.createIndex()
    values = []
    for i, cat in enumerate([1, 2, 3]):
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(detections))), "bbox")
        ev.params.catIds = [cat]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        ours = report["classes"][i]["values"]
        print(
            f"category {cat}: ours ap50 {ours['ap50']:.4f} ap50_95 {ours['ap50_95']:.4f}; "
            f"pycocotools {ev.stats[1]:.4f} {ev.stats[0]:.4f}"
        )
        assert abs(ours["ap50"] - ev.stats[1]) <= 0.01
        assert abs(ours["ap50_95"] - ev.stats[0]) <= 0.01
        values.append(ours["ap50"])
    assert min(values) > 0.2  # a real comparison, not zeros against zeros
    assert abs(report["metrics"]["val/map50"] - float(np.mean(values))) <= 0.01
