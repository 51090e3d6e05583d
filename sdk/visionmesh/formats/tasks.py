"""Task names shared across visionmesh (the proto enum ``TaskType`` suffixes in lower case)."""

from __future__ import annotations

IMAGE_CLASSIFICATION = "image_classification"
OBJECT_DETECTION = "object_detection"
INSTANCE_SEGMENTATION = "instance_segmentation"
SEMANTIC_SEGMENTATION = "semantic_segmentation"
POSE_ESTIMATION = "pose_estimation"

TASKS = (
    IMAGE_CLASSIFICATION,
    OBJECT_DETECTION,
    INSTANCE_SEGMENTATION,
    SEMANTIC_SEGMENTATION,
    POSE_ESTIMATION,
)

TASK_ALIASES = {
    "classify": IMAGE_CLASSIFICATION,
    "classification": IMAGE_CLASSIFICATION,
    "detect": OBJECT_DETECTION,
    "detection": OBJECT_DETECTION,
    "segment": INSTANCE_SEGMENTATION,
    "segmentation": INSTANCE_SEGMENTATION,
    "semantic": SEMANTIC_SEGMENTATION,
    "pose": POSE_ESTIMATION,
    "keypoints": POSE_ESTIMATION,
}

# DICE task-specific annotation file stems (annotations_<stem>.json).
DICE_FILE_STEMS = {
    OBJECT_DETECTION: "detection",
    INSTANCE_SEGMENTATION: "segmentation",
    IMAGE_CLASSIFICATION: "classification",
    POSE_ESTIMATION: "pose",
}


def normalize_task(name: str) -> str:
    """Return the canonical task name for ``name`` (a task name, an alias, or a proto enum name)."""
    key = name.strip().lower()
    if key.startswith("task_type_"):
        key = key[len("task_type_") :]
    if key in TASKS:
        return key
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    choices = ", ".join(TASKS + tuple(TASK_ALIASES))
    raise ValueError(f"unknown task {name!r}; expected one of: {choices}")
