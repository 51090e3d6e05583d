"""Datasets over the prepared layouts: "imagefolder" for classification, "coco" for
detection (boxes) and semantic segmentation (masks rasterized from polygons or RLE).

Images are resized to a square ``image_size`` (no crop, no letterbox) and normalized with
the ImageNet mean and std; Predict does the same and maps outputs back to input pixels.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainers.runtime.torchkit.imagefolder import imagefolder_samples

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IGNORE = 255


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> normalized float tensor (3, size, size)."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# --- classification -----------------------------------------------------------------------


class ImageFolderSplit(torch.utils.data.Dataset):
    """``<root>/<class name>/<file>`` with labels in the job's class order."""

    def __init__(
        self,
        root: Path,
        class_names: list[str],
        size: int,
        train: bool,
        hflip: float,
        augmentation: str = "light",
    ):
        if augmentation not in ("light", "flip", "none"):
            raise ValueError(
                f"extra['augmentation'] must be light, flip or none, not {augmentation!r}"
            )
        self.size, self.train, self.hflip = size, train, hflip
        self.crop = train and augmentation == "light"
        if augmentation == "none":
            self.hflip = 0.0
        self.samples = imagefolder_samples(root, class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = open_rgb(path)
        if self.crop:
            image = random_resized_crop(image, scale=(0.5, 1.0))
        if self.train:
            if random.random() < self.hflip:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image, self.size), label


def ann_box(ann: dict[str, Any]) -> list[float] | None:
    """[x, y, w, h] of an annotation: its bbox, else the extent of its polygons."""
    bbox = ann.get("bbox")
    if bbox and len(bbox) == 4 and float(bbox[2]) > 0 and float(bbox[3]) > 0:
        return [float(v) for v in bbox]
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        xs = [float(v) for poly in segmentation for v in poly[0::2]]
        ys = [float(v) for poly in segmentation for v in poly[1::2]]
        if xs and ys and max(xs) > min(xs) and max(ys) > min(ys):
            return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return None


def random_resized_crop(image: Image.Image, scale: tuple[float, float]) -> Image.Image:
    w, h = image.size
    for _ in range(10):
        area = w * h * random.uniform(*scale)
        ratio = np.exp(random.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = random.randint(0, w - cw), random.randint(0, h - ch)
            return image.crop((x, y, x + cw, y + ch))
    return image


def collate_classification(batch):
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


# --- COCO ---------------------------------------------------------------------------------


@dataclass
class CocoSplit:
    """One ``annotations_<split>.json`` with category ids mapped to class indices."""

    document: dict[str, Any]
    images_dir: Path
    cat_to_index: dict[int, int]
    anns_by_image: dict[int, list[dict[str, Any]]]

    @classmethod
    def load(cls, dataset_dir: Path, split: str, class_names: list[str]) -> CocoSplit:
        path = dataset_dir / f"annotations_{split}.json"
        if not path.is_file():
            document: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
        else:
            document = json.loads(path.read_text())
        categories = sorted(document.get("categories", []), key=lambda c: int(c["id"]))
        names = [c["name"] for c in categories]
        if categories and names != list(class_names):
            raise ValueError(
                f"{path.name} categories {names} (sorted by id) differ from the job's classes "
                f"{list(class_names)}"
            )
        cat_to_index = {int(c["id"]): i for i, c in enumerate(categories)}
        anns_by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in document.get("annotations", []):
            anns_by_image.setdefault(int(ann["image_id"]), []).append(ann)
        return cls(document, dataset_dir / "images", cat_to_index, anns_by_image)

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.document.get("images", [])

    def coco_ground_truth(self) -> dict[str, Any]:
        """The document with the fields COCOeval insists on (area, iscrowd, ids) filled."""
        annotations = []
        for i, ann in enumerate(self.document.get("annotations", [])):
            box = ann_box(ann)
            if box is None:
                continue
            x, y, w, h = box
            annotations.append(
                {
                    "id": int(ann.get("id", i + 1)),
                    "image_id": int(ann["image_id"]),
                    "category_id": int(ann["category_id"]),
                    "bbox": [x, y, w, h],
                    "area": float(ann.get("area") or w * h),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
        return {
            "info": {},
            "images": [
                {"id": int(im["id"]), "width": int(im["width"]), "height": int(im["height"])}
                for im in self.images
            ],
            "annotations": annotations,
            "categories": [
                {"id": int(c["id"]), "name": c["name"]} for c in self.document["categories"]
            ],
        }


def rasterize(ann: dict[str, Any], height: int, width: int) -> np.ndarray | None:
    """Binary mask (H, W) of a COCO annotation's polygons or RLE, with pycocotools."""
    from pycocotools import mask as mask_utils

    segmentation = ann.get("segmentation")
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        rles = mask_utils.frPyObjects(polygons, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    return mask_utils.decode(rle).astype(bool)


def semantic_mask(
    anns: list[dict[str, Any]], cat_to_index: dict[int, int], height: int, width: int
) -> np.ndarray:
    """(H, W) uint8: 0 background, 1 + class index elsewhere; larger regions painted first.

    Polygons go through the formats library's rasterizer (the one CheckCompatibility's
    "rasterize" conversion describes); RLE masks, which the prepared layouts do not carry
    today, are decoded with pycocotools and painted on top.
    """
    from visionmesh.formats.geometry import rasterize as rasterize_polygons

    polygons, rles = [], []
    for ann in anns:
        index = cat_to_index.get(int(ann["category_id"]))
        segmentation = ann.get("segmentation")
        if index is None or not segmentation:
            continue
        if isinstance(segmentation, list):
            polygons.append((index + 1, [p for p in segmentation if len(p) >= 6]))
        else:
            rles.append((index + 1, ann))
    mask = rasterize_polygons(width, height, polygons).copy()
    for value, ann in rles:
        region = rasterize(ann, height, width)
        if region is not None:
            mask[region] = value
    return mask


class CocoDetection(torch.utils.data.Dataset):
    """Items: (pixel tensor, {"class_labels", "boxes" (cx, cy, w, h in [0, 1])}, image id)."""

    def __init__(self, split: CocoSplit, size: int, train: bool, hflip: float):
        self.split, self.size, self.train, self.hflip = split, size, train, hflip

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int):
        info = self.split.images[i]
        image = open_rgb(self.split.images_dir / info["file_name"])
        w, h = image.size
        labels, boxes = [], []
        for ann in self.split.anns_by_image.get(int(info["id"]), []):
            box = ann_box(ann)
            if ann.get("iscrowd") or box is None:
                continue
            if int(ann["category_id"]) not in self.split.cat_to_index:
                continue
            x, y, bw, bh = box
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            labels.append(self.split.cat_to_index[int(ann["category_id"])])
            boxes.append([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
        box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if self.train and random.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            box_tensor[:, 0] = 1.0 - box_tensor[:, 0]
        target = {"class_labels": torch.tensor(labels, dtype=torch.long), "boxes": box_tensor}
        return to_tensor(image, self.size), target, int(info["id"])


def collate_detection(batch):
    images, targets, ids = zip(*batch, strict=True)
    return torch.stack(images), list(targets), list(ids)


class CocoSegmentation(torch.utils.data.Dataset):
    """Items: (pixel tensor, (size, size) long mask: 0 background, 1 + class index)."""

    def __init__(self, split: CocoSplit, size: int, train: bool, hflip: float):
        self.split, self.size, self.train, self.hflip = split, size, train, hflip

    def __len__(self) -> int:
        return len(self.split.images)

    def __getitem__(self, i: int):
        info = self.split.images[i]
        image = open_rgb(self.split.images_dir / info["file_name"])
        w, h = image.size
        anns = self.split.anns_by_image.get(int(info["id"]), [])
        mask = Image.fromarray(semantic_mask(anns, self.split.cat_to_index, h, w))
        if self.train and random.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        return to_tensor(image, self.size), torch.from_numpy(
            np.asarray(mask, dtype=np.int64).copy()
        )


def collate_segmentation(batch):
    images, masks = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(masks)
