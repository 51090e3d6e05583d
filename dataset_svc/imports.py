"""ImportAnnotations: read a document with the formats library, validate, replace: all or nothing.

An import without files is refused unless ``format`` is ImageFolder (labels from folder
names, asked for by name); a dataset that has annotations keeps them unless the request
sets ``replace_existing`` (FAILED_PRECONDITION otherwise).

The document's files come in the request (one JSON file, or the label files of a folder
layout such as YOLO's ``labels/train/x.txt``); the images are the ones already in the
catalog (path, width, height, sha256), so the reader matches labels to images exactly as
it would on disk. Any error refuses the import with a BadRequest naming each problem's
JSON path (``annotations[17].bbox``, ``labels/train/a.txt:3``); warnings refuse it unless
``allow_warnings``. On success the dataset's categories and annotations are replaced in
the caller's transaction and image splits given by the document are applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, exists, select, update
from sqlalchemy.orm import Session

from dataset_svc import documents, paths
from dataset_svc.catalog.models import Annotation, Category, Dataset, Image
from dataset_svc.validation import text_problem
from visionmesh import formats
from visionmesh.errors import failed_precondition, invalid_argument, invalid_fields

MAX_VIOLATIONS = 100
MAX_CATEGORY_NAME = 255  # the catalog's column
MAX_ID = 2**63 - 1  # category ids are stored as 64-bit integers
MAX_EXTRA_DEPTH = 32  # extra category fields are stored as JSON; keypoints/skeleton need 2
CATEGORY_KEYS = {"id", "name", "supercategory"}


class File(Protocol):
    """An annotation file as a request carries it."""

    path: str
    content: bytes


@dataclass
class Imported:
    variant: str
    image_count: int
    annotation_count: int
    category_count: int
    warnings: list[formats.Problem] = field(default_factory=list)


def _refuse(problems: list[formats.Problem], what: str, hint: str) -> Exception:
    first = problems[0]
    violations = [(p.path or "files", p.message) for p in problems[:MAX_VIOLATIONS]]
    return invalid_fields(
        f"the annotations were not imported: {len(problems)} {what}; first: "
        f"{first.path or 'document'}: {first.message}. {hint}",
        violations,
    )


def _request_files(sent: Sequence[File]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    problems = []
    for i, f in enumerate(sent):
        try:
            path = paths.normalize(f.path)
        except paths.BadPath as exc:
            problems.append((f"files[{i}].path", str(exc)))
            continue
        if path in files:
            problems.append((f"files[{i}].path", f"{path!r} is sent twice"))
        files[path] = f.content
    if problems:
        raise invalid_fields(f"bad annotation files: {problems[0][1]}", problems)
    return files


def _document_field(sent: Sequence[File]) -> str:
    """The field of the (first) JSON file sent, else ``files``."""
    for i, f in enumerate(sent):
        if f.path.lower().endswith(".json"):
            return f"files[{i}].content"
    return "files"


def _has_annotations(session: Session, dataset_id: str) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(Annotation.dataset_id == dataset_id)
                | exists().where(Category.dataset_id == dataset_id)
            )
        )
    )


def _check_class_names(class_names: Sequence[str]) -> None:
    problems = [
        (f"class_names[{i}]", why)
        for i, name in enumerate(class_names)
        if (why := text_problem(name, MAX_CATEGORY_NAME) or ("" if name.strip() else "empty"))
    ]
    if problems:
        raise invalid_fields(f"bad class name: {problems[0][0]} {problems[0][1]}", problems)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_categories(categories: list[dict[str, Any]]) -> None:
    """Category names as the catalog stores them: bounded, no control characters; other
    fields (keypoints, skeleton, anything else kept) nested at most MAX_EXTRA_DEPTH deep."""
    problems = []
    for i, c in enumerate(categories):
        if not 0 <= c.get("id", 0) <= MAX_ID:
            problems.append((f"categories[{i}].id", f"must be between 0 and {MAX_ID}"))
        for key, value in c.items():
            if key not in CATEGORY_KEYS and _too_deep(value, MAX_EXTRA_DEPTH):
                problems.append(
                    (f"categories[{i}].{key}", f"nested deeper than {MAX_EXTRA_DEPTH} levels")
                )
        for key in ("name", "supercategory"):
            value = c.get(key) or ""
            if not isinstance(value, str):
                problems.append((f"categories[{i}].{key}", "must be a string"))
            elif why := text_problem(value, MAX_CATEGORY_NAME):
                problems.append((f"categories[{i}].{key}", why))
        if len(problems) >= MAX_VIOLATIONS:
            break
    if problems:
        raise invalid_fields(
            f"the annotations were not imported: {problems[0][0]} {problems[0][1]}", problems
        )


def import_annotations(
    session: Session,
    dataset: Dataset,
    files: Sequence[File],
    *,
    fmt: str | None = None,
    class_names: Sequence[str] = (),
    replace_existing: bool = False,
    allow_warnings: bool = False,
) -> Imported:
    """Replace the dataset's annotations with the document in ``files``, read as ``fmt``
    ("dice", "coco", "yolo", "imagefolder"; None: recognized from the files)."""
    rows = session.execute(
        select(Image.id, Image.path, Image.width, Image.height, Image.sha256).where(
            Image.dataset_id == dataset.id
        )
    ).all()
    if not rows:
        raise failed_precondition(
            f"datasets/{dataset.id} has no images: upload them (UploadImages) before importing "
            "their annotations"
        )
    files_by_path = _request_files(files)
    if not files_by_path and fmt != "imagefolder":
        raise invalid_argument(
            "files is empty: send the annotation document (a DICE/COCO JSON file, YOLO label "
            "files); to label images by their folder names instead, set format to "
            "ANNOTATION_FORMAT_IMAGEFOLDER",
            "files",
        )
    _check_class_names(class_names)
    source = formats.MemorySource(
        files_by_path, {r.path: (r.width, r.height, r.sha256) for r in rows}
    )
    try:
        result = formats.read(source, format=fmt, class_names=list(class_names) or None)
    except RecursionError:  # the formats library bounds depth; never trust that blindly
        raise invalid_argument(
            "the annotation document is nested too deeply to be an annotation document",
            _document_field(files),
        ) from None
    if not result.variant and result.errors:  # e.g. not JSON, nested too deeply: say why
        raise _refuse(result.errors, "errors", "Fix them and import again.")
    if not result.variant or result.variant == "images-only":
        listed = ", ".join(sorted(files_by_path)[:5]) or "no files"
        raise invalid_argument(
            f"no annotation document recognized in the files sent ({listed}): send a DICE/COCO "
            "JSON file, YOLO label files (labels/...txt, data.yaml), or set format to "
            "ANNOTATION_FORMAT_IMAGEFOLDER to label images by their folder names",
            "files",
        )
    if result.errors:
        raise _refuse(result.errors, "errors", "Fix them and import again.")
    if result.warnings and not allow_warnings:
        raise _refuse(result.warnings, "warnings", "Set allow_warnings to import anyway.")
    document = formats.to_dice_dict(result.dataset)
    _check_categories(document["categories"])
    # The request is valid; whether it may replace what is there is the dataset's state.
    if not replace_existing and _has_annotations(session, dataset.id):
        raise failed_precondition(
            f"datasets/{dataset.id} already has annotations: set replace_existing to replace "
            "them with this document (a snapshot keeps the current ones: CreateSnapshot first)"
        )
    image_id_of = {r.path: r.id for r in rows}
    _replace(session, dataset.id, document, image_id_of)
    dataset.labeled = True
    dataset.annotation_variant = result.variant
    return Imported(
        variant=result.variant,
        image_count=len(document["images"]),
        annotation_count=len(document["annotations"]),
        category_count=len(document["categories"]),
        warnings=list(result.warnings),
    )


def _replace(
    session: Session, dataset_id: str, document: dict[str, Any], image_id_of: dict[str, int]
) -> None:
    catalog_image = {}
    splits = []
    for image in document["images"]:
        path = image["file_name"]
        if path not in image_id_of:  # the reader validates this; never trust it blindly
            raise invalid_argument(f"image {path!r} of the document is not in the dataset", "files")
        catalog_image[image["id"]] = image_id_of[path]
        if image.get("split"):
            splits.append({"image_id": image_id_of[path], "new_split": image["split"]})
    session.execute(delete(Annotation).where(Annotation.dataset_id == dataset_id))
    session.execute(delete(Category).where(Category.dataset_id == dataset_id))
    if document["categories"]:
        session.execute(
            Category.__table__.insert(),
            [
                {
                    "dataset_id": dataset_id,
                    "category_id": c["id"],
                    "name": c["name"],
                    "supercategory": c.get("supercategory") or "",
                    "extra": {k: v for k, v in c.items() if k not in CATEGORY_KEYS},
                }
                for c in document["categories"]
            ],
        )
    if document["annotations"]:
        rows = [
            {
                "dataset_id": dataset_id,
                "image_id": catalog_image[a["image_id"]],
                "category_id": a["category_id"],
                "bbox": a.get("bbox"),
                "segmentation": a.get("segmentation"),
                "keypoints": a.get("keypoints"),
                "area": float(a.get("area") or 0.0),
                "iscrowd": int(a.get("iscrowd") or 0),
            }
            for a in document["annotations"]
        ]
        for row in rows:
            row["doc_json"] = documents.annotation_fragment(
                row["image_id"],
                row["category_id"],
                row["bbox"],
                row["segmentation"],
                row["keypoints"],
                row["area"],
                row["iscrowd"],
            )
        session.execute(Annotation.__table__.insert(), rows)
    if splits:
        table = Image.__table__
        session.execute(
            update(table)
            .where(table.c.id == bindparam("image_id"))
            .values(split=bindparam("new_split")),
            splits,
        )
