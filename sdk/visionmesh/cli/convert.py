"""Offline dataset commands: ``vmesh convert``, ``vmesh validate``, ``vmesh shapes``.

Exit status: 0 done, 1 the input was refused (its problems are listed on stderr),
2 bad command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .. import compat, formats
from ..formats import Problem
from ..formats.images import PLACE_MODES
from ..formats.reader import gc_paused
from ..formats.yolo_read import YamlLimitError, safe_yaml_load
from ..splits import SplitError, resolve_splits

EXIT_OK = 0
EXIT_REFUSED = 1

_TASK_HELP = (
    "image_classification, object_detection, instance_segmentation, semantic_segmentation, "
    "pose_estimation (or classify, detect, segment, semantic, pose)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a dataset between DICE, COCO, YOLO and ImageFolder (offline)",
        description="Read SRC (any supported layout, auto-detected), check it can train TASK, "
        "and write it to OUT in the chosen format.",
    )
    p.add_argument("src", metavar="SRC", help="dataset folder or annotation file")
    p.add_argument("--to", required=True, choices=formats.FORMATS, help="output format")
    p.add_argument("--task", help=f"task to prepare for: {_TASK_HELP}; default: inferred")
    p.add_argument("out", metavar="OUT", help="output folder (new or empty)")
    _common(p)
    p.add_argument(
        "--images",
        choices=PLACE_MODES,
        default="link",
        help="how to put images in OUT: hard link (else copy), copy, symlink, or none "
        "(labels only, image files not checked); default: link",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed for images without a split")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val share when splitting")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT")
    p.set_defaults(func=run_convert)

    v = subparsers.add_parser(
        "validate",
        help="report every problem of a dataset (and, with --task, what training would use)",
    )
    v.add_argument("src", metavar="SRC", help="dataset folder or annotation file")
    v.add_argument("--task", help=f"also check compatibility with a task: {_TASK_HELP}")
    _common(v)
    v.add_argument("--no-check-images", action="store_true", help="do not open image files")
    v.add_argument("--json", action="store_true", help="print the full report as JSON")
    v.add_argument("--split-seed", type=int, default=0)
    v.add_argument("--val-fraction", type=float, default=0.2)
    v.set_defaults(func=run_validate)

    s = subparsers.add_parser(
        "shapes", help="generate the synthetic shapes dataset (DICE) into a folder"
    )
    s.add_argument("out", metavar="OUT")
    s.add_argument("--images", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-shapes", type=int, default=4, help="most shapes per image")
    s.set_defaults(func=run_shapes)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="source_format",
        choices=("dice", "coco", "yolo", "imagefolder"),
        help="source format hint (default: auto-detect)",
    )
    p.add_argument(
        "--names",
        metavar="FILE",
        help="class names for YOLO without data.yaml: a YAML with 'names' or one name per line",
    )
    p.add_argument(
        "--images-dir", help="folder holding the images, when not beside the annotations"
    )
    p.add_argument("--max-problems", type=int, default=50, help="problems printed (default 50)")


def load_names(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        try:
            data = safe_yaml_load(text)
        except (YamlLimitError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        names = data.get("names") if isinstance(data, dict) else data
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names, key=int)]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise ValueError(f"{path}: no 'names' list or mapping")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _print_problems(problems: list[Problem], limit: int) -> None:
    shown = problems if limit <= 0 else problems[:limit]
    for p in shown:
        print(p, file=sys.stderr)
    if len(problems) > len(shown):
        print(f"... and {len(problems) - len(shown)} more problem(s)", file=sys.stderr)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _read(args: argparse.Namespace, check_images: bool) -> formats.ReadResult | int:
    try:
        names = load_names(args.names) if args.names else None
        task = formats.normalize_task(args.task) if args.task else None
        return formats.read(
            args.src,
            format=args.source_format,
            task=task,
            class_names=names,
            check_images=check_images,
            image_root=args.images_dir,
        )
    except FileNotFoundError as exc:
        return _fail(str(exc).strip("'\""))
    except (ValueError, OSError) as exc:
        return _fail(str(exc))


def _describe(result: formats.ReadResult) -> str:
    ds = result.dataset
    layout = f"\nlayout: {result.layout}" if result.layout else ""
    return (
        f"read {result.variant or 'nothing'}: {len(ds.images)} images, "
        f"{len(ds.annotations)} annotations, {len(ds.categories)} categories{layout}"
    )


def _print_notes(result: formats.ReadResult) -> None:
    for p in result.notes:
        print(p)


def _everything(result: formats.ReadResult, args: argparse.Namespace) -> formats.Dataset | None:
    """The dataset as read (crowd regions, keypoints, every extra field), each image with
    its split: the given one, else one made with the seed (on copies of the images)."""
    source = result.dataset
    try:
        splits = resolve_splits(source, seed=args.split_seed, val_fraction=args.val_fraction)
    except SplitError as exc:
        _fail(str(exc))
        return None
    for w in splits.warnings:
        print(f"warning: {w}", file=sys.stderr)
    images = [
        dataclasses.replace(im, split=splits.splits.get(im.id) or im.split) for im in source.images
    ]
    return dataclasses.replace(source, images=images)


def _with_crowd(result: formats.ReadResult, prepared: formats.Dataset) -> formats.Dataset:
    """The converted dataset plus the crowd regions on its images (COCO holds them)."""
    images = {im.id for im in prepared.images}
    cats = {c.id for c in prepared.categories}
    crowd = [
        a
        for a in result.dataset.annotations
        if a.iscrowd and a.image_id in images and a.category_id in cats
    ]
    if crowd:
        prepared.annotations = prepared.annotations + crowd
    return prepared


def run_convert(args: argparse.Namespace) -> int:
    # Millions of small objects and no cycles among them: the collector would only rescan.
    with gc_paused():
        return _convert(args)


def _convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        return _fail(f"{out} is not empty (use --force to write into it)")
    if Path(args.src).resolve() == out.resolve():
        return _fail("SRC and OUT are the same folder")
    result = _read(args, check_images=args.images != "none")
    if isinstance(result, int):
        return result
    print(_describe(result))
    _print_notes(result)
    if not result.ok:
        _print_problems(result.errors + result.warnings, args.max_problems)
        return _fail(f"{args.src}: refused, {len(result.errors)} error(s)")
    try:
        task = formats.normalize_task(args.task) if args.task else None
    except ValueError as exc:
        return _fail(str(exc))
    _print_problems(result.warnings, args.max_problems)
    if args.to in ("coco", "dice") and task is None:
        # No task asked for: COCO and DICE hold everything, so everything is written.
        dataset = _everything(result, args)
        if dataset is None:
            return EXIT_REFUSED
        conversion = "with everything as read"
    else:
        task = task or formats.infer_task(result.dataset)
        if args.to == "imagefolder" and task != formats.IMAGE_CLASSIFICATION:
            return _fail("ImageFolder holds image classification only (use --task classify)")
        if args.to == "yolo" and task == formats.SEMANTIC_SEGMENTATION:
            return _fail("YOLO has no semantic segmentation format (use --to dice)")
        dataset, report = compat.prepare(
            result.dataset, task, split_seed=args.split_seed, val_fraction=args.val_fraction
        )
        for w in report.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if dataset is None:
            for e in report.errors:
                print(f"error: {e}", file=sys.stderr)
            return _fail(f"{args.src} cannot train {task}")
        if args.to in ("coco", "dice"):
            dataset = _with_crowd(result, dataset)  # COCO holds crowd regions: kept
        conversion = f"for {task} ({report.conversion})"
    source = formats.open_source(args.src, args.images_dir)
    written = formats.write(
        dataset,
        args.to,
        out,
        task=task,
        source=source if args.images != "none" else None,
        images=args.images,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction,
    )
    _print_problems(written.problems, args.max_problems)
    if any(p.is_error for p in written.problems):
        return _fail("some images could not be written")
    placed = f", {written.images_placed} images ({args.images})" if args.images != "none" else ""
    print(
        f"wrote {args.to} {conversion} to {out}: "
        f"{len(dataset.images)} images, {len(dataset.annotations)} annotations{placed}"
    )
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    result = _read(args, check_images=not args.no_check_images)
    if isinstance(result, int):
        return result
    report = None
    if args.task and result.ok:
        report = compat.check(
            result.dataset, args.task, split_seed=args.split_seed, val_fraction=args.val_fraction
        )
    if args.json:
        doc: dict[str, Any] = {
            "variant": result.variant,
            "layout": result.layout,
            "documents": result.documents,
            "summary": result.dataset.summary(),
            "problems": [p.to_dict() for p in result.problems],
            "ok": result.ok,
        }
        if report is not None:
            doc["compatibility"] = report.to_dict()
        print(json.dumps(doc, indent=2))
    else:
        print(_describe(result))
        _print_notes(result)
        _print_problems(result.errors + result.warnings, args.max_problems)
        if report is not None:
            _print_report(report)
        print(f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)")
    if not result.ok or (report is not None and not report.compatible):
        return EXIT_REFUSED
    return EXIT_OK


def _print_report(report: compat.CompatibilityReport) -> None:
    verdict = "compatible" if report.compatible else "NOT compatible"
    print(
        f"{report.task}: {verdict}, conversion {report.conversion}"
        f"{' (lossy)' if report.lossy else ''}, {report.usable_images}/{report.total_images} "
        f"images usable, {report.dropped_annotations} annotations dropped"
    )
    for c in report.class_counts:
        print(
            f"  {c.split:5} {c.category_name}: {c.image_count} images, {c.annotation_count} annotations"
        )
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)


def run_shapes(args: argparse.Namespace) -> int:
    from .. import shapes  # drawing needs Pillow, which convert and validate do without

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        return _fail(f"{out} is not empty")
    try:
        dataset = shapes.generate(
            out, images=args.images, size=args.size, seed=args.seed, max_shapes=args.max_shapes
        )
    except ValueError as exc:
        return _fail(str(exc))
    print(
        f"wrote {len(dataset.images)} images, {len(dataset.annotations)} annotations "
        f"(shapes, seed {args.seed}) to {out}"
    )
    return EXIT_OK
