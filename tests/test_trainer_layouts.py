"""The training layout the runtime writes for a job: given splits are kept, and a snapshot with
train images but no val gets a seeded val split for the job (its own splits unchanged)."""

from __future__ import annotations

import json

import pytest

from tests._job_context import lay_out, shapes_snapshot
from trainers.runtime.layouts import LayoutError


@pytest.fixture(scope="module")
def shapes_source(tmp_path_factory):
    source = tmp_path_factory.mktemp("shapes")
    return shapes_snapshot(source, images=20, size=48, max_shapes=2)


def layout(tmp_path, document, files, layout_name="yolo", seed=0):
    out = tmp_path / f"out-{layout_name}-{seed}-{len(list(tmp_path.iterdir()))}"
    return lay_out(
        document, files, out, task_type="object_detection", layout=layout_name, split_seed=seed
    )


def test_given_splits_are_kept(tmp_path, shapes_source):
    document, files = shapes_source
    split = json.loads(json.dumps(document))
    for i, image in enumerate(split["images"]):
        image["split"] = "val" if i % 4 == 0 else "train"
    given = {im["file_name"]: im["split"] for im in split["images"]}
    info = layout(tmp_path, split, files)
    assert info["counts"] == {
        "train": sum(v == "train" for v in given.values()),
        "val": sum(v == "val" for v in given.values()),
    }
    assert not info["split_generated"]
    assert not any("held out" in w for w in info["warnings"])


@pytest.mark.parametrize("layout_name", ["yolo", "coco"])
def test_train_only_snapshot_holds_out_val_for_the_job(tmp_path, shapes_source, layout_name):
    document, files = shapes_source
    train_only = json.loads(json.dumps(document))
    for image in train_only["images"]:
        image["split"] = "train"
    info = layout(tmp_path, train_only, files, layout_name)
    counts = info["counts"]
    assert counts["train"] + counts["val"] == 20 and 2 <= counts["val"] <= 6, counts
    assert info["split_generated"]
    assert any("no val" in w and "unchanged" in w for w in info["warnings"]), info["warnings"]
    # the same seed gives the same split; the manifest itself is not changed
    again = layout(tmp_path, train_only, files, layout_name, seed=0)
    assert again["counts"] == counts
    assert all(im["split"] == "train" for im in train_only["images"])


def test_coco_layout_writes_plain_coco_per_split_and_other_names_are_refused(
    tmp_path, shapes_source
):
    document, files = shapes_source
    info = layout(tmp_path, document, files, "coco")
    (out,) = tmp_path.glob("out-coco-*")
    for split, count in info["counts"].items():
        written = json.loads((out / f"annotations_{split}.json").read_text())
        assert len(written["images"]) == count
        assert all("split" not in im for im in written["images"])  # COCO, not DICE
        assert all((out / "images" / im["file_name"]).is_file() for im in written["images"])
    assert not (out / "meta.json").exists()
    # "dice" is a format of the SDK's writers (DICE + meta.json), not a training layout
    with pytest.raises(LayoutError, match="unknown dataset layout 'dice'"):
        layout(tmp_path, document, files, "dice")
