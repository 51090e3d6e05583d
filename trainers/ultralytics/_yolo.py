"""The heavy half of the ultralytics adapter: runs only in job and predict child processes.

Offline by construction (FRAMEWORK-NOTES.md lists every call): ``YOLO_OFFLINE=1``,
``YOLO_AUTOINSTALL=0``, a private ``YOLO_CONFIG_DIR`` holding ``Arial.ttf`` and
``Arial.Unicode.ttf`` (copies of matplotlib's DejaVuSans.ttf) and a settings file with sync and
every integration off, a private ``MPLCONFIGDIR``, models built from ``<name>.yaml`` or a local
file, resume from an absolute ``last.pt`` path, and on CUDA ``check_amp`` replaced by a function
returning True (AMP stays on without downloading yolo26n.pt).

Several GPUs for one job (a device list "0,1", or "cuda" with ``devices`` N) run
ultralytics' own DDP: it trains in ``torch.distributed.run`` children it starts itself,
rebuilding the trainer there with its callbacks (cloudpickled), so the epoch callbacks
cannot reach this process's job. In that mode its rank 0 writes each finished epoch
(metrics and a copy of last.pt) into ``<work_dir>/ddp-epochs``, and a relay thread here
reports them in order; a stop request becomes a ``stop`` file there that rank 0's callback
turns into ``trainer.stop`` (ultralytics broadcasts it to every rank).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from trainers.runtime.adapter import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    POSE_ESTIMATION,
    JobContext,
    Prediction,
    single_device,
)

_SETTINGS_OFF = {
    "sync": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def setup_offline(config_root: Path) -> None:
    """Make ultralytics network-free; call before the first ``import ultralytics``."""
    config_root = Path(config_root).resolve()
    ul_dir = config_root / "Ultralytics"
    ul_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_VERBOSE"] = os.environ.get("YOLO_VERBOSE", "True")
    os.environ["YOLO_CONFIG_DIR"] = str(config_root)
    os.environ.setdefault("MPLCONFIGDIR", str(config_root / "matplotlib"))
    Path(os.environ["MPLCONFIGDIR"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    missing = [f for f in _FONTS if not (ul_dir / f).exists()]
    if missing:
        import importlib.util

        spec = importlib.util.find_spec("matplotlib")
        assert spec and spec.submodule_search_locations
        font = (
            Path(next(iter(spec.submodule_search_locations)))
            / "mpl-data"
            / "fonts"
            / "ttf"
            / "DejaVuSans.ttf"
        )
        for name in missing:
            tmp = ul_dir / f".{name}.tmp{os.getpid()}"
            shutil.copyfile(font, tmp)
            os.replace(tmp, ul_dir / name)
    from ultralytics.utils import SETTINGS

    if any(SETTINGS.get(k) != v for k, v in _SETTINGS_OFF.items()):
        SETTINGS.update(_SETTINGS_OFF)


def keep_amp_without_network() -> None:
    """On CUDA: AMP on, but skip ultralytics' AMP check (it downloads yolo26n.pt)."""
    import ultralytics.engine.trainer as trainer_mod

    trainer_mod.check_amp = lambda *args, **kwargs: True


def parse_extra(value: str) -> Any:
    """``"true"`` -> True, ``"0.5"`` -> 0.5, ``"AdamW"`` -> "AdamW" (YAML scalars)."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (bool, int, float, str)) or parsed is None else value


def ultralytics_device(device: str, devices: int = 1) -> str:
    """ultralytics' device argument: "cpu", "0", or "0,1" for its DDP (``devices`` > 1 with
    "cuda": the first ``devices`` GPUs)."""
    if device == "cuda" and devices > 1:
        return ",".join(str(i) for i in range(devices))
    if device in ("", "cpu"):
        return device or "cpu"
    if device == "cuda":
        return "0"
    if device.startswith("cuda:"):
        return device.split(":", 1)[1]
    return device


# -- dataset view -------------------------------------------------------------------------


def _fresh_dir(path: Path) -> Path:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` into ``dst`` with real folders and per-file hard links (or symlinks).

    Folder symlinks would not do: ultralytics resolves dataset folders, which would lead
    it back into the prepared folder to write its ``*.cache`` files there.
    """
    for root, _dirs, files in os.walk(src):
        target_dir = dst / Path(root).relative_to(src)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in files:
            source = Path(root) / name
            target = target_dir / name
            try:
                os.link(source, target)
            except OSError:
                target.symlink_to(source)


def build_view(dataset_dir: Path, task_type: str, work_dir: Path) -> Path:
    """A writable view of the read-only prepared dataset; returns what ``data=`` takes.

    Images are linked file by file, YOLO labels are copied, so the ``*.cache`` files
    ultralytics writes next to them land in this job's folder, never in the shared one.
    """
    dataset_dir = Path(dataset_dir).resolve()
    view = _fresh_dir(Path(work_dir).resolve() / "data")
    if task_type == IMAGE_CLASSIFICATION:
        for split in ("train", "val", "test"):
            if (dataset_dir / split).is_dir():
                _link_tree(dataset_dir / split, view / split)
        return view
    data = yaml.safe_load((dataset_dir / "data.yaml").read_text())
    for split in ("train", "val", "test"):
        images = dataset_dir / "images" / split
        if not images.is_dir():
            continue
        _link_tree(images, view / "images" / split)
        labels_src = dataset_dir / "labels" / split
        labels_dst = view / "labels" / split
        labels_dst.mkdir(parents=True)
        for root, _dirs, files in os.walk(images):
            rel_dir = Path(root).relative_to(images)
            for name in files:
                stem = Path(name).stem
                # nested layout (labels mirror images) or flat labels/<split>/<stem>.txt
                for candidate in (labels_src / rel_dir / f"{stem}.txt", labels_src / f"{stem}.txt"):
                    if candidate.is_file():
                        target = labels_dst / rel_dir / f"{stem}.txt"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(candidate, target)
                        break
    data = {k: v for k, v in data.items() if k not in ("path", "train", "val", "test")}
    data["path"] = str(view)
    data["train"] = "images/train"
    data["val"] = "images/val"
    if (view / "images" / "test").exists():
        data["test"] = "images/test"
    data_yaml = view / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml


# -- metrics ------------------------------------------------------------------------------

_SUFFIX = {"(B)": "", "(M)": "mask_", "(P)": "pose_"}
_BASE = {
    "precision": "precision",
    "recall": "recall",
    "mAP50": "map50",
    "mAP50-95": "map50_95",
}


def normalize_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """ultralytics metric keys -> the platform's normalized names (DESIGN.md section 8)."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if key.startswith("metrics/"):
            name = key[len("metrics/") :]
            if name == "accuracy_top1":
                out["val/top1"] = number
            elif name == "accuracy_top5":
                out["val/top5"] = number
            else:
                for suffix, prefix in _SUFFIX.items():
                    if name.endswith(suffix) and name[: -len(suffix)] in _BASE:
                        out[f"val/{prefix}{_BASE[name[: -len(suffix)]]}"] = number
        elif key.startswith(("train/", "val/")):
            out[key] = number
        elif key == "lr/pg0":
            out["lr"] = number
    for split in ("train", "val"):
        parts = [v for k, v in out.items() if k.startswith(f"{split}/") and k.endswith("_loss")]
        if parts and f"{split}/loss" not in out:
            out[f"{split}/loss"] = sum(parts)
    return out


def _epoch_report(trainer: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """The epoch ``on_fit_epoch_end`` just ended (``epoch`` 1-based, ``values``, ``last``:
    last.pt or None, ``is_best``, ``images``), or None for the extra call ultralytics makes
    after the final evaluation of best.pt (epoch == epochs, no training epoch in between).
    ``state["pending"]`` is the 0-based epoch ``on_train_epoch_end`` saw last."""
    if state.get("pending") is None or state["pending"] != trainer.epoch:
        return None
    state["pending"] = None
    last = Path(trainer.last)
    is_best = trainer.fitness is not None and trainer.best_fitness == trainer.fitness
    return {
        "epoch": trainer.epoch + 1,
        "values": _trainer_metrics(trainer),
        "last": last if last.exists() else None,
        "is_best": bool(is_best),
        "images": len(trainer.train_loader.dataset) if trainer.train_loader else 0,
    }


def _trainer_metrics(trainer: Any) -> dict[str, float]:
    raw: dict[str, Any] = {}
    if getattr(trainer, "tloss", None) is not None:
        raw.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
    raw.update(trainer.metrics or {})
    raw.update(getattr(trainer, "lr", None) or {})
    return normalize_metrics(raw)


# -- training -----------------------------------------------------------------------------


def train(adapter: Any, job: JobContext) -> None:
    spec = job.spec
    setup_offline(job.work_dir / "ultralytics-config")
    from ultralytics import YOLO

    device = ultralytics_device(spec.device, spec.devices)
    if device not in ("cpu", "mps"):
        keep_amp_without_network()
    distributed = "," in device
    data = build_view(job.dataset_dir, spec.task_type, job.work_dir)
    save_dir = job.work_dir.resolve() / "runs" / "train"
    extras = {k: parse_extra(v) for k, v in spec.extra.items()}
    extras.setdefault("workers", min(2, os.cpu_count() or 1))
    common: dict[str, Any] = {
        "data": str(data),
        "device": device,
        "save_dir": str(save_dir),
        "workers": extras["workers"],
        "plots": bool(extras.pop("plots", False)),
    }
    if job.resume_from is not None:
        job.log(f"resuming from {job.resume_from}")
        model = YOLO(str(job.resume_from))
        kwargs = {**common, "resume": str(job.resume_from.resolve())}
    else:
        name = adapter.resolve_model(spec.model, spec.task_type)
        if job.pretrained_weights is not None:
            job.log(f"loading pretrained weights {job.pretrained_weights.name}")
            model = YOLO(str(job.pretrained_weights))
        else:
            model = YOLO(f"{name}.yaml")
        kwargs = {
            **extras,
            **common,
            "epochs": spec.epochs,
            "batch": spec.batch_size,
            "imgsz": spec.image_size,
            "lr0": spec.learning_rate,
            "seed": spec.seed,
            "patience": spec.patience,
            "project": str(save_dir.parent),
            "name": save_dir.name,
            "exist_ok": True,
            "pretrained": job.pretrained_weights is not None,
        }
    state: dict[str, Any] = {"pending": None}

    def on_train_epoch_end(trainer: Any) -> None:
        state["pending"] = trainer.epoch

    def on_fit_epoch_end(trainer: Any) -> None:
        report = _epoch_report(trainer, state)
        if report is None:
            return
        stop = job.report_epoch(
            report["epoch"],
            report["values"],
            checkpoint=report["last"],
            images_seen=report["images"],
            is_best=report["is_best"],
        )
        if stop or job.should_stop():
            trainer.stop = True

    relay = None
    if distributed:
        relay = DDPEpochRelay(job, job.work_dir.resolve() / "ddp-epochs")
        job.log(f"ultralytics DDP on GPUs {device} ({len(device.split(','))} processes)")
        add_ddp_callbacks(model, relay)
        relay.start()
    else:
        model.add_callback("on_train_epoch_end", on_train_epoch_end)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    started = time.monotonic()
    try:
        model.train(**kwargs)
    finally:
        if relay is not None:
            relay.finish()
    job.log(f"ultralytics training finished in {time.monotonic() - started:.1f}s")
    # ultralytics strips the optimizer from best.pt at the end (strip_optimizer): store that.
    best = save_dir / "weights" / "best.pt"
    replace = getattr(job, "replace_checkpoint", None)
    if replace is not None and best.is_file():
        replace("best.pt", best)


# -- ultralytics DDP: epochs relayed from its rank 0 ---------------------------------------


def add_ddp_callbacks(model: Any, relay: DDPEpochRelay) -> None:
    """The callbacks ultralytics' DDP children run (picklable: no closure over the job)."""
    model.add_callback("on_pretrain_routine_start", _ddp_pretrain)
    model.add_callback("on_train_epoch_end", _ddp_train_epoch_end)
    model.add_callback("on_fit_epoch_end", functools.partial(_ddp_fit_epoch_end, relay.path))


def _ddp_pretrain(trainer: Any) -> None:
    """In ultralytics' DDP children: keep AMP without its networked check there too."""
    keep_amp_without_network()


def _ddp_train_epoch_end(trainer: Any) -> None:
    trainer.__dict__.setdefault("_visionmesh", {})["pending"] = trainer.epoch


def _ddp_fit_epoch_end(folder: str, trainer: Any) -> None:
    """In ultralytics' DDP rank 0: write the epoch for :class:`DDPEpochRelay` (a copy of
    last.pt, then its JSON by an atomic rename), wait until the relay has reported it (as
    a single process does, so a stop request takes effect after this very epoch), and stop
    when the relay asks."""
    if os.environ.get("RANK", "0") != "0":
        return
    report = _epoch_report(trainer, trainer.__dict__.setdefault("_visionmesh", {}))
    out = Path(folder)
    if report is not None:
        out.mkdir(parents=True, exist_ok=True)
        n = report["epoch"]
        if report["last"] is not None:
            shutil.copyfile(report["last"], out / f"epoch_{n}.pt")
        doc = {k: report[k] for k in ("epoch", "values", "is_best", "images")}
        doc["checkpoint"] = report["last"] is not None
        (out / f".epoch_{n}.json.tmp").write_text(json.dumps(doc))
        os.replace(out / f".epoch_{n}.json.tmp", out / f"epoch_{n}.json")
        deadline = time.monotonic() + RELAY_WAIT_SECONDS
        while not (out / f"reported_{n}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if (out / "stop").exists():
        trainer.stop = True


#: How long ultralytics' DDP rank 0 waits for an epoch to be reported before going on.
RELAY_WAIT_SECONDS = 120.0


class DDPEpochRelay(threading.Thread):
    """Reports, in this (the job's) process, the epochs ultralytics' DDP rank 0 writes to
    ``path`` (``epoch_<n>.json`` + ``epoch_<n>.pt``), each once and in order; writes
    ``path/stop`` when the runtime asks the job to stop, then ``path/reported_<n>``."""

    def __init__(self, job: JobContext, path: Path) -> None:
        super().__init__(daemon=True, name="ddp-epochs")
        self.job = job
        self.path = str(path)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self.done: set[int] = set()
        self._finished = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._finished.wait(0.1):
            self.sweep()

    def finish(self) -> None:
        self._finished.set()
        self.join(timeout=10)
        self.sweep()

    def sweep(self) -> None:
        with self._lock:
            folder = Path(self.path)
            found = sorted(int(p.stem.removeprefix("epoch_")) for p in folder.glob("epoch_*.json"))
            for n in (e for e in found if e not in self.done):
                doc = json.loads((folder / f"epoch_{n}.json").read_text())
                checkpoint = folder / f"epoch_{n}.pt" if doc.get("checkpoint") else None
                stop = self.job.report_epoch(
                    n,
                    doc["values"],
                    checkpoint=checkpoint,
                    images_seen=int(doc.get("images", 0)),
                    is_best=bool(doc.get("is_best")),
                )
                self.done.add(n)
                (folder / f"epoch_{n - 2}.pt").unlink(missing_ok=True)
                if stop or self.job.should_stop():
                    (folder / "stop").touch()
                (folder / f"reported_{n}").touch()


# -- prediction -----------------------------------------------------------------------------

_MODELS: dict[tuple[str, float], Any] = {}


def _load(checkpoint: Path) -> Any:
    from ultralytics import YOLO

    key = (str(checkpoint), checkpoint.stat().st_mtime)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = YOLO(str(checkpoint))
    return _MODELS[key]


def predict(
    checkpoint: Path,
    image: bytes,
    *,
    task_type: str,
    class_names: list[str],
    confidence: float,
    max_detections: int,
    device: str,
) -> Prediction:
    if "YOLO_CONFIG_DIR" not in os.environ or os.environ.get("YOLO_OFFLINE") != "1":
        setup_offline(checkpoint.parent / "ultralytics-config")
    from PIL import Image

    img = Image.open(io.BytesIO(image))
    img.load()
    img = img.convert("RGB")
    model = _load(checkpoint)
    result = model.predict(
        img,
        conf=confidence,
        max_det=max_detections,
        device=ultralytics_device(single_device(device)),
        verbose=False,
    )[0]
    names = result.names or dict(enumerate(class_names))
    out = Prediction(task_type=task_type, image_width=img.width, image_height=img.height)

    def name_of(index: int) -> str:
        if 0 <= index < len(class_names):
            return class_names[index]
        return str(names.get(index, index))

    if result.probs is not None:
        probs = result.probs.data.float().cpu().numpy()
        order = probs.argsort()[::-1][: max(1, min(5, len(probs)))]
        out.classes = [
            {"category_id": int(i), "category_name": name_of(int(i)), "score": float(probs[i])}
            for i in order
        ]
        return out
    boxes = result.boxes
    if boxes is None:
        return out
    xyxy = boxes.xyxy.float().cpu().numpy()
    scores = boxes.conf.float().cpu().numpy()
    classes = boxes.cls.int().cpu().numpy()
    polygons = result.masks.xy if result.masks is not None else None
    keypoints = (
        result.keypoints.data.float().cpu().numpy() if result.keypoints is not None else None
    )
    for i in range(len(xyxy)):
        x1, y1, x2, y2 = (float(v) for v in xyxy[i])
        det: dict[str, Any] = {
            "category_id": int(classes[i]),
            "category_name": name_of(int(classes[i])),
            "score": float(scores[i]),
            "box": (x1, y1, x2 - x1, y2 - y1),
            "polygons": [],
            "keypoints": [],
        }
        if polygons is not None and task_type == INSTANCE_SEGMENTATION and i < len(polygons):
            poly = polygons[i]
            if len(poly) >= 3:
                det["polygons"] = [[float(c) for point in poly for c in point]]
        if keypoints is not None and task_type == POSE_ESTIMATION:
            for point in keypoints[i]:
                x, y = float(point[0]), float(point[1])
                score = float(point[2]) if len(point) > 2 else 1.0
                det["keypoints"].append((x, y, 2 if score >= 0.5 else 1, score))
        out.detections.append(det)
    return out


# -- after training: export, evaluation, weights check ----------------------------------------

_ULTRALYTICS_TASK = {
    "object_detection": "detect",
    INSTANCE_SEGMENTATION: "segment",
    IMAGE_CLASSIFICATION: "classify",
    POSE_ESTIMATION: "pose",
}


def export(checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str) -> Path:
    """ultralytics' own exporter (ONNX with onnxslim when installed, TorchScript); offline."""
    if "YOLO_CONFIG_DIR" not in os.environ or os.environ.get("YOLO_OFFLINE") != "1":
        setup_offline(Path(out_dir) / "ultralytics-config")
    from ultralytics import YOLO

    out = YOLO(str(checkpoint)).export(
        format=fmt, imgsz=image_size, device=ultralytics_device(device or "cpu")
    )
    return Path(out)


def evaluate(adapter: Any, job: JobContext, checkpoint: Path) -> dict[str, Any]:
    """ultralytics' validator on the val split: per-class AP, confusion matrix, PR curves."""
    import numpy as np

    from trainers.runtime import evaluation

    spec = job.spec
    if "YOLO_CONFIG_DIR" not in os.environ or os.environ.get("YOLO_OFFLINE") != "1":
        setup_offline(job.work_dir / "ultralytics-config")
    from ultralytics import YOLO

    view = Path(job.work_dir).resolve() / "data"
    if spec.task_type == IMAGE_CLASSIFICATION:
        data = view if view.is_dir() else build_view(job.dataset_dir, spec.task_type, job.work_dir)
    else:
        data = view / "data.yaml"
        if not data.is_file():
            data = build_view(job.dataset_dir, spec.task_type, job.work_dir)
    save_dir = Path(job.work_dir).resolve() / "runs"
    metrics = YOLO(str(checkpoint)).val(
        data=str(data),
        imgsz=spec.image_size,
        batch=spec.batch_size,
        device=ultralytics_device(single_device(spec.device)),
        plots=True,  # PR curve data are kept only when plotting
        project=str(save_dir),
        name="evaluation",
        exist_ok=True,
        workers=0,
        verbose=False,
        split="val",
    )
    nc = len(job.class_names)
    cm = getattr(metrics, "confusion_matrix", None)
    matrix = np.asarray(cm.matrix).T if cm is not None else np.zeros((0, 0))  # rows: true
    values = normalize_metrics(getattr(metrics, "results_dict", {}) or {})
    if spec.task_type == IMAGE_CLASSIFICATION:
        matrix = matrix[:nc, :nc]
        return {
            "metrics": values,
            "classes": evaluation.confusion_report(matrix),
            "confusion_matrix": {"rows": matrix.tolist()},
            "pr_curves": [],
        }
    main = {INSTANCE_SEGMENTATION: "seg", POSE_ESTIMATION: "pose"}.get(spec.task_type, "box")
    part = getattr(metrics, main)
    box = metrics.box
    counts = np.asarray(getattr(metrics, "nt_per_class", np.zeros(nc)))
    ap_index = [int(c) for c in getattr(metrics, "ap_class_index", [])]
    classes = []
    for c in range(nc):
        item: dict[str, Any] = {
            "index": c,
            "values": {"ap50": 0.0, "ap50_95": 0.0, "precision": 0.0, "recall": 0.0},
            "instance_count": int(counts[c]) if c < len(counts) else 0,
        }
        if c in ap_index:
            i = ap_index.index(c)
            item["values"] = {
                "ap50": float(part.ap50[i]),
                "ap50_95": float(part.ap[i]),
                "precision": float(part.p[i]),
                "recall": float(part.r[i]),
            }
            if main != "box":
                item["values"]["box_ap50"] = float(box.ap50[i])
                item["values"]["box_ap50_95"] = float(box.ap[i])
        classes.append(item)
    curves = []
    prec = np.asarray(getattr(part, "prec_values", []))
    px = np.asarray(getattr(part, "px", []))
    if prec.ndim == 2 and len(px):
        pick = np.linspace(0, len(px) - 1, 101).round().astype(int)
        for i, c in enumerate(ap_index[: len(prec)]):
            curves.append(
                {"index": c, "recall": px[pick].tolist(), "precision": prec[i][pick].tolist()}
            )
    return {
        "metrics": values,
        "classes": classes,
        "confusion_matrix": {"rows": matrix[: nc + 1, : nc + 1].tolist()},
        "pr_curves": curves,
    }


def check_weights(adapter: Any, path: Path, model: str, task_type: str) -> str:
    """Load ``path`` with YOLO(); its task and architecture must be ``model``'s."""
    if "YOLO_CONFIG_DIR" not in os.environ or os.environ.get("YOLO_OFFLINE") != "1":
        setup_offline(Path(path).parent / "ultralytics-config")
    from ultralytics import YOLO

    if Path(path).suffix != ".pt":
        raise ValueError("ultralytics weights are .pt files (YOLO(path) loads them)")
    try:
        loaded = YOLO(str(path))
    except Exception as exc:
        raise ValueError(f"YOLO() cannot load it: {type(exc).__name__}: {exc}") from None
    want_task = _ULTRALYTICS_TASK[task_type]
    if loaded.task != want_task:
        raise ValueError(f"it is a {loaded.task} model; {task_type} needs a {want_task} model")
    name = adapter.resolve_model(model, task_type)
    yaml_file = str((getattr(loaded.model, "yaml", None) or {}).get("yaml_file", ""))
    if yaml_file and Path(yaml_file).stem != name:
        raise ValueError(f"it is a {Path(yaml_file).stem} model, not {name}")
    names = getattr(loaded, "names", {}) or {}
    params = sum(p.numel() for p in loaded.model.parameters())
    return f"{name} ({want_task}), {len(names)} classes, {params / 1e6:.2f}M parameters"
