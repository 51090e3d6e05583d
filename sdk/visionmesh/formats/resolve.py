"""Find where a document's images are: its ``file_name`` values are relative to some folder.

A DICE document names images relative to the dataset root; a COCO document in
``annotations/`` usually names them relative to a sibling folder (``val2017/``) or to
``images/``. The prefix under which most of a sample of names exists wins.
"""

from __future__ import annotations

import posixpath
import re

from .source import Source

_SAMPLE = 48


def _stem_folder(document: str) -> str | None:
    """``annotations/instances_val2017.json`` -> ``val2017`` (COCO's image folder)."""
    stem = posixpath.splitext(posixpath.basename(document))[0]
    match = re.match(
        r"^(?:instances|person_keypoints|captions|annotations|stuff|panoptic|image_info|labels)"
        r"_(.+)$",
        stem,
    )
    return match.group(1) if match else None


def candidate_prefixes(document: str | None) -> list[str]:
    out = [""]
    doc_dir = posixpath.dirname(document) if document else ""
    if doc_dir:
        out.append(doc_dir + "/")
        out.append(doc_dir + "/images/")
    out.append("images/")
    folder = _stem_folder(document) if document else None
    if folder:
        out += [folder + "/", "images/" + folder + "/"]
        # COCO's test-dev images are in test2017/
        dev = re.match(r"^test-dev(\d*)$", folder)
        if dev:
            out += [f"test{dev.group(1)}/", f"images/test{dev.group(1)}/"]
    seen: list[str] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def choose_image_prefix(source: Source, names: list[str], document: str | None) -> str:
    """The prefix to put before each ``file_name`` to find the image in ``source``."""
    valid = [n for n in names if isinstance(n, str) and n]
    if not valid:
        return ""
    step = max(1, len(valid) // _SAMPLE)
    sample = valid[::step][:_SAMPLE]
    best, best_hits = "", 0
    for prefix in candidate_prefixes(document):
        hits = sum(1 for n in sample if source.has_image(prefix + n))
        if hits > best_hits:
            best, best_hits = prefix, hits
        if hits == len(sample):
            break
    return best
