"""Dataset preparation: snapshot manifest -> local blob cache -> converted read-only folder.

Runs in the job's child process (never imports a framework). Under the cache root
(``$VISIONMESH_HOME/trainer-cache`` by default):

``blobs/<aa>/<sha256>``   image bytes by content hash, verified; a second job on the same
                          images downloads nothing
``prepared/<key>/``       the dataset converted once per (snapshot, layout, task, split seed,
                          val fraction): built in a temporary folder, made read-only, then
                          renamed into place, under a file lock so concurrent jobs build it once
``prepared/<key>/prepared.json``  what the job needs: class names and category ids in the
                          layout's index order, split counts, conversion, timings
``in-use/<key>/<job>``    one marker per job using the prepared folder (made by the job while
                          it prepares, removed by its trainer when it ends); ``last-used`` there
                          is touched when a job whose results are kept ends on it

Everything is private to the trainers' user: files 0400 once published, folders 0700 (0500
when read-only). :func:`sweep_cache` removes prepared folders no job uses that are stale
(their snapshot's manifest left the store, or no kept job used them for ``keep_seconds``)
and every cached image no prepared folder links to; it never runs while a job prepares
(``locks/cache.lock``: shared while preparing, exclusive while sweeping).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionmesh.store import KeyNotFound, ObjectStore, blob_key

PREPARED_INFO = "prepared.json"
LAST_USED = "last-used"
STALE_TEMP_SECONDS = 24 * 3600


@dataclass
class PreparedDataset:
    path: Path
    class_names: list[str]
    category_ids: list[int]
    counts: dict[str, int] = field(default_factory=dict)
    conversion: str = ""
    split_generated: bool = False
    cached: bool = False  # True when the converted folder already existed
    downloaded_blobs: int = 0
    seconds: float = 0.0
    # what the conversion dropped, assumed or held out, for the job log
    warnings: list[str] = field(default_factory=list)


class PrepareError(RuntimeError):
    """The snapshot cannot be prepared (missing blob, incompatible annotations, ...)."""


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@contextlib.contextmanager
def file_lock(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[bool]:
    """Hold a flock on ``path`` (``mode`` | LOCK_NB yields False instead of waiting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class BlobCache:
    """Local copies of store blobs by sha256; files are read-only once published."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        self.root = Path(root)
        self.store = store
        self.downloaded = 0

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def get(self, sha256: str) -> Path:
        target = self.path(sha256)
        if target.is_file():
            return target
        key = blob_key(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256[:8]}.")
        os.close(fd)
        try:
            try:
                self.store.download(key, tmp)
            except KeyNotFound:
                raise PrepareError(
                    f"image blob {key} is missing from the object store (run CheckIntegrity)"
                ) from None
            digest = hashlib.sha256()
            with open(tmp, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                raise PrepareError(f"image blob {key} is corrupt (its bytes hash differently)")
            os.chmod(tmp, 0o400)
            os.replace(tmp, target)
            self.downloaded += 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return target


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, stat.S_IRUSR)
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o500)
    os.chmod(root, 0o500)


def remove_tree(path: Path) -> None:
    """rmtree that first makes read-only folders writable again."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        os.chmod(dirpath, 0o700)
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(Path(dirpath) / name, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def prepared_key(
    snapshot: str, layout: str, task: str, split_seed: int, val_fraction: float
) -> str:
    snap = _safe(snapshot.replace("datasets/", "").replace("/snapshots/", "-"))
    return f"{snap}-{layout}-{task}-seed{split_seed}-val{val_fraction:g}"


def prepare_dataset(
    store: ObjectStore,
    *,
    manifest_key: str,
    snapshot: str,
    task_type: str,
    layout: str,
    split_seed: int,
    val_fraction: float,
    cache_root: Path,
    log: Any = print,
    user: str = "",
) -> PreparedDataset:
    """The prepared folder for this snapshot/layout/task/split, building it when absent.

    ``user`` (``<framework>-<job id>``) marks the folder in use until the trainer calls
    :func:`release` for that job, so :func:`sweep_cache` leaves it alone meanwhile.
    """
    started = time.monotonic()
    cache_root = Path(cache_root)
    key = prepared_key(snapshot, layout, task_type, split_seed, val_fraction)
    final = cache_root / "prepared" / key
    with (
        file_lock(cache_root / "locks" / "cache.lock", fcntl.LOCK_SH),
        file_lock(cache_root / "locks" / f"{key}.lock"),
    ):
        if user:
            marker = cache_root / "in-use" / key / _safe(user)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        info_path = final / PREPARED_INFO
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            log(f"dataset {snapshot} already prepared as {layout} ({key})")
            return _result(final, info, cached=True, seconds=time.monotonic() - started)
        try:
            manifest = store.get_bytes(manifest_key)
        except KeyNotFound:
            raise PrepareError(
                f"snapshot manifest {manifest_key} is missing from the store"
            ) from None
        blobs = BlobCache(cache_root / "blobs", store)
        (cache_root / "prepared").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_root / "prepared", prefix=f".{key}."))
        try:
            from trainers.runtime.layouts import write_layout

            info = write_layout(
                manifest,
                task_type=task_type,
                layout=layout,
                split_seed=split_seed,
                val_fraction=val_fraction,
                out_dir=tmp,
                final_dir=final,
                image_file=blobs.get,
            )
            info["downloaded_blobs"] = blobs.downloaded
            info["snapshot"] = snapshot
            info["layout"] = layout
            info["task_type"] = task_type
            info["manifest_key"] = manifest_key
            (tmp / PREPARED_INFO).write_text(json.dumps(info, indent=1))
            _make_read_only(tmp)
            remove_tree(final)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        log(
            f"prepared {snapshot} as {layout} for {task_type}: {info.get('counts')} "
            f"({blobs.downloaded} images downloaded)"
        )
        return _result(final, info, cached=False, seconds=time.monotonic() - started)


def _result(path: Path, info: dict[str, Any], *, cached: bool, seconds: float) -> PreparedDataset:
    return PreparedDataset(
        path=path,
        class_names=list(info["class_names"]),
        category_ids=[int(c) for c in info["category_ids"]],
        counts=dict(info.get("counts", {})),
        conversion=str(info.get("conversion", "")),
        split_generated=bool(info.get("split_generated", False)),
        cached=cached,
        downloaded_blobs=0 if cached else int(info.get("downloaded_blobs", 0)),
        seconds=seconds,
        warnings=[str(w) for w in info.get("warnings", [])],
    )


def release(cache_root: Path, user: str, *, kept: bool) -> None:
    """``user``'s job ended: drop its in-use markers (wherever it got as far as making one,
    even when it was cancelled while preparing); ``kept`` (its results stay) refreshes the
    folders' last use, so a rerun on the same data soon after reuses them."""
    for marker in (Path(cache_root) / "in-use").glob(f"*/{_safe(user)}"):
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        if kept:
            (marker.parent / LAST_USED).touch()


def sweep_cache(
    cache_root: Path,
    *,
    keep_seconds: float,
    manifest_exists: Any,
    now: float | None = None,
) -> dict[str, int]:
    """Remove prepared folders no job uses that are stale, then images nothing links to.

    A folder is stale when ``manifest_exists(manifest_key)`` is False (its snapshot or
    dataset was deleted), or when no job whose results were kept used it in the last
    ``keep_seconds`` (folders only cancelled jobs used go at once). Returns counts; does
    nothing (``{"busy": 1}``) while a job prepares.
    """
    cache_root = Path(cache_root)
    now = time.time() if now is None else now
    removed = {"prepared": 0, "images": 0}
    prepared_root = cache_root / "prepared"
    with file_lock(cache_root / "locks" / "cache.lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as got:
        if not got:
            return {"busy": 1}
        for folder in sorted(prepared_root.iterdir()) if prepared_root.is_dir() else []:
            if folder.name.startswith("."):  # a build that died half-way
                if now - folder.stat().st_mtime > STALE_TEMP_SECONDS:
                    remove_tree(folder)
                continue
            in_use = cache_root / "in-use" / folder.name
            users = [p for p in in_use.iterdir() if p.name != LAST_USED] if in_use.is_dir() else []
            if users:
                continue
            try:
                info = json.loads((folder / PREPARED_INFO).read_text())
            except (OSError, ValueError):
                info = {}
            manifest = str(info.get("manifest_key", ""))
            last = in_use / LAST_USED
            used = last.stat().st_mtime if last.exists() else 0.0
            gone = bool(manifest) and not manifest_exists(manifest)
            if gone or now - used >= keep_seconds:
                remove_tree(folder)
                shutil.rmtree(in_use, ignore_errors=True)
                removed["prepared"] += 1
        blobs = cache_root / "blobs"
        for path in blobs.rglob("*") if blobs.is_dir() else []:
            # prepared folders hard-link their images: a single link means nothing uses it
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    path.unlink()
                    removed["images"] += 1
    return removed
