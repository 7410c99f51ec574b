"""Kinetics-style video folders: ``<root>/<split>/<class>/<clip>``, decoded to fixed clips.

A clip file is either

* ``.npy``: uint8 ``[T, H, W, C]`` frames (the layout every video set is accepted in, and
  the pre-extraction target: decode a video once with any tool and save its frames), or
* a video container (``.mp4 .avi .webm .mkv``), decoded with PyAV (``pip install av``,
  which bundles FFmpeg); without it the source says how to pre-extract to ``.npy``.

Decoding takes ``frames`` frames at the centres of ``frames`` equal segments of the clip
(``floor((j + 0.5) * T / frames)``) and resizes each bilinearly to ``size x size``
(PIL), giving uint8 ``[frames, size, size, C]`` (Kinetics-400 in the paper: 8 frames of
64x64). The **decode cache** (``cache_dir``) stores each decoded clip as ``.npy`` keyed
by the file's path, size, mtime and the decode settings, so a clip is decoded once and
then read back as raw frames.

Classes are the sorted sub-folder names (natural order); the stable sample id of a clip
is its position in the (class, file name) order of the split listing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from gold.data.errors import DatasetError
from gold.data.sources.base import natural_key

NPY = ".npy"
CONTAINERS = (".mp4", ".avi", ".webm", ".mkv")
PRE_EXTRACT = ("decode the videos once to uint8 .npy frame arrays [T, H, W, C] (e.g. "
               "gold.data.stream.video.decode_container after pip install av, or ffmpeg -vf "
               "fps=... to PNGs then numpy) and point the source at those")


def frame_positions(num_frames: int, frames: int) -> np.ndarray:
    """int ``[frames]`` centre frame of each of ``frames`` equal segments of ``num_frames``."""
    if num_frames < 1:
        raise DatasetError("a clip with no frames")
    return np.minimum(((np.arange(frames) + 0.5) * num_frames / frames).astype(np.int64), num_frames - 1)


def resize_frames(clip: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[T, size, size, C]``: each frame resized bilinearly (unchanged if already)."""
    if clip.shape[1:3] == (size, size):
        return clip
    out = []
    for f in clip:
        img = Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f)
        r = np.asarray(img.resize((size, size), Image.BILINEAR), np.uint8)
        out.append(r[..., None] if r.ndim == 2 else r)
    return np.stack(out)


def decode_container(path: str | os.PathLike) -> np.ndarray:
    """All frames of a video file as uint8 ``[T, H, W, 3]`` (PyAV).

    Raises:
      DatasetError: PyAV is not installed (with the pre-extraction recipe) or the file
        cannot be decoded.
    """
    try:
        import av
    except ImportError as e:
        raise DatasetError(f"{path}: decoding video containers needs PyAV (pip install av); "
                           f"otherwise {PRE_EXTRACT}") from e
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError) as e:
        raise DatasetError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise DatasetError(f"{path}: no video frames")
    return np.stack(frames).astype(np.uint8)


def read_clip(path: Path) -> np.ndarray:
    """The raw frames of one clip file, uint8 ``[T, H, W, C]``."""
    if path.suffix.lower() == NPY:
        clip = np.load(path, allow_pickle=False)
        if clip.dtype != np.uint8 or clip.ndim != 4:
            raise DatasetError(f"{path}: {clip.shape} {clip.dtype}; expected uint8 [T, H, W, C]")
        return clip
    return decode_container(path)


class VideoFolderSource:
    """Random access to the clips of one split (a grain ``RandomAccessDataSource``).

    ``source[i]`` is ``(id, label, clip uint8 [frames, size, size, C])``. Only the listing
    (paths and labels) is held in memory; clips are read (and decoded, or taken from the
    decode cache) on access.

    Attributes:
      ids: int64 ``[N]`` stable sample ids (``arange``: listing order).
      labels: int32 ``[N]``.
      classes: class folder names (label order).
      shape: ``(frames, size, size, C)`` of a decoded clip (C from the first clip's
        ``.npy`` header; 3 for containers).
      decoded: clips decoded so far by this object (cache misses).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, frames: int = 8, size: int = 64,
                 cache_dir: str | os.PathLike | None = None):
        base = Path(root) / split
        if not base.is_dir():
            raise DatasetError(f"{base}: no such folder; expected <root>/{split}/<class>/<clip>.npy|.mp4")
        self.classes = tuple(sorted((d.name for d in base.iterdir() if d.is_dir()), key=natural_key))
        if not self.classes:
            raise DatasetError(f"{base}: no class folders")
        paths, labels = [], []
        for c, name in enumerate(self.classes):
            clips = sorted((p for p in (base / name).iterdir() if p.suffix.lower() in (NPY, *CONTAINERS)),
                           key=lambda p: natural_key(p.name))
            paths += clips
            labels += [c] * len(clips)
        if not paths:
            raise DatasetError(f"{base}: no clips (.npy or {' '.join(CONTAINERS)})")
        self.paths = tuple(paths)
        self.ids = np.arange(len(paths), dtype=np.int64)
        self.labels = np.asarray(labels, np.int32)
        self.frames, self.size = int(frames), int(size)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.decoded = 0
        first = self.paths[0]  # channels without decoding: the .npy header, or RGB for a container
        channels = np.load(first, mmap_mode="r").shape[-1] if first.suffix.lower() == NPY else 3
        self.shape = (self.frames, self.size, self.size, int(channels))

    @property
    def num_classes(self) -> int:
        """K."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def _cache_path(self, path: Path) -> Path:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.frames}|{self.size}"
        return self.cache_dir / (hashlib.sha1(key.encode()).hexdigest() + NPY)

    def decode(self, path: Path) -> np.ndarray:
        """uint8 ``[frames, size, size, C]`` of one clip file (no cache)."""
        clip = read_clip(path)
        self.decoded += 1
        return resize_frames(clip[frame_positions(len(clip), self.frames)], self.size)

    def __getitem__(self, i: int) -> tuple[int, int, np.ndarray]:
        i = int(i)
        path = self.paths[i]
        if self.cache_dir is None:
            return int(self.ids[i]), int(self.labels[i]), self.decode(path)
        cached = self._cache_path(path)
        if cached.is_file():
            return int(self.ids[i]), int(self.labels[i]), np.load(cached)
        clip = self.decode(path)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, clip)
        os.replace(tmp, cached)  # atomic: concurrent readers never see half a file
        return int(self.ids[i]), int(self.labels[i]), clip

    def __repr__(self) -> str:
        return f"VideoFolderSource(n={len(self)}, classes={self.num_classes}, shape={self.shape})"


__all__ = ["CONTAINERS", "VideoFolderSource", "decode_container", "frame_positions", "read_clip",
           "resize_frames"]
