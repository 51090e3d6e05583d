"""Where readers find annotation files and images.

Two kinds of source, one interface:

- :class:`DirectorySource`: a folder on disk (optionally pinned to one annotation document,
  when the user pointed at a file, and optionally with images in another folder);
- :class:`MemorySource`: annotation files as ``{relative_path: bytes}`` plus the images the
  caller already knows as ``{relative_path: (width, height[, sha256])}``. This is how the
  dataset service imports a document whose images are already in its catalog.

All paths are relative, with POSIX separators.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from .images import read_size, sha256_file
from .paths import is_image_path

# Folders never scanned for annotations or images.
_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", ".DS_Store"}


class Source:
    """Interface of a dataset source. See :class:`DirectorySource` and :class:`MemorySource`."""

    name: str = ""
    # The one annotation document the user pointed at, when a file was given.
    document: str | None = None

    def files(self) -> list[str]:
        """Relative paths of every non-image file, sorted."""
        raise NotImplementedError

    def images(self) -> list[str]:
        """Relative paths of every image, sorted."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def has_image(self, path: str) -> bool:
        return self.exists(path)

    def open(self, path: str) -> BinaryIO:
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as fh:
            return fh.read()

    def image_size(self, path: str) -> tuple[int, int] | None:
        """(width, height) of an image, None when it is absent; raises when unreadable."""
        raise NotImplementedError

    def image_sha256(self, path: str) -> str | None:
        return None

    def image_byte_size(self, path: str) -> int | None:
        return None

    def local_image(self, path: str) -> Path | None:
        """The image's file on disk, for linking or copying; None when not on disk."""
        return None


class DirectorySource(Source):
    def __init__(
        self,
        root: str | Path,
        document: str | None = None,
        image_root: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = str(root)
        self.document = document
        self.image_root = Path(image_root) if image_root is not None else self.root
        self._files: list[str] | None = None
        self._images: list[str] | None = None
        self._sizes: dict[str, tuple[int, int]] = {}

    def _walk(self) -> None:
        """List the folder once: non-image files and images."""
        files: list[str] = []
        images: list[str] = []
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
            prefix = "" if rel_dir == "." else rel_dir + "/"
            for name in filenames:
                rel = prefix + name
                (images if is_image_path(name) else files).append(rel)
        self._files = sorted(files)
        if self._images is None and self.image_root == self.root:
            self._images = sorted(images)

    def files(self) -> list[str]:
        if self._files is None:
            self._walk()
        return self._files  # type: ignore[return-value]

    def images(self) -> list[str]:
        if self._images is None:
            if self.image_root != self.root:
                self._images = DirectorySource(self.image_root).images()
            else:
                self._walk()
        return self._images  # type: ignore[return-value]

    def _path(self, path: str) -> Path:
        return self.root / path

    def _image_path(self, path: str) -> Path:
        return self.image_root / path

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def has_image(self, path: str) -> bool:
        return self._image_path(path).is_file()

    def open(self, path: str) -> BinaryIO:
        return open(self._path(path), "rb")

    def image_size(self, path: str) -> tuple[int, int] | None:
        size = self._sizes.get(path)
        if size is not None:
            return size
        full = self._image_path(path)
        if not full.is_file():
            return None
        size = read_size(full)
        self._sizes[path] = size
        return size

    def image_sha256(self, path: str) -> str | None:
        full = self._image_path(path)
        return sha256_file(full) if full.is_file() else None

    def image_byte_size(self, path: str) -> int | None:
        try:
            return self._image_path(path).stat().st_size
        except OSError:
            return None

    def local_image(self, path: str) -> Path | None:
        full = self._image_path(path)
        return full if full.is_file() else None


class MemorySource(Source):
    """Annotation files in memory plus the images the caller knows (no image bytes needed)."""

    def __init__(
        self,
        files: Mapping[str, bytes | str],
        images: Mapping[str, tuple] | None = None,
        name: str = "<memory>",
    ) -> None:
        self._data = {k.replace("\\", "/"): v for k, v in files.items()}
        self._known = {k.replace("\\", "/"): tuple(v) for k, v in (images or {}).items()}
        self.name = name
        json_docs = [k for k in self._data if k.endswith(".json")]
        self.document = None
        if len(self._data) == 1 and len(json_docs) == 1:
            self.document = json_docs[0]

    def files(self) -> list[str]:
        return sorted(k for k in self._data if not is_image_path(k))

    def images(self) -> list[str]:
        return sorted(self._known)

    def exists(self, path: str) -> bool:
        return path in self._data or path in self._known

    def has_image(self, path: str) -> bool:
        return path in self._known

    def open(self, path: str) -> BinaryIO:
        data = self._data[path]
        if isinstance(data, str):
            data = data.encode("utf-8")
        return io.BytesIO(data)

    def image_size(self, path: str) -> tuple[int, int] | None:
        info = self._known.get(path)
        if info is None:
            return None
        return int(info[0]), int(info[1])

    def image_sha256(self, path: str) -> str | None:
        info = self._known.get(path)
        if info is None or len(info) < 3:
            return None
        return info[2] or None


def open_source(
    src: str | Path | Source,
    image_root: str | Path | None = None,
) -> Source:
    """A :class:`Source` for a folder or a single annotation file. Raises FileNotFoundError."""
    if isinstance(src, Source):
        return src
    path = Path(src)
    if path.is_dir():
        return DirectorySource(path, image_root=image_root)
    if path.is_file():
        folder = path.parent
        document = path.name
        # A COCO document usually sits in annotations/, its images beside that folder.
        if folder.name in ("annotations", "annotation") and folder.parent != folder:
            document = f"{folder.name}/{path.name}"
            folder = folder.parent
        return DirectorySource(folder, document=document, image_root=image_root)
    raise FileNotFoundError(f"{src}: no such file or directory")
