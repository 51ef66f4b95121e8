"""The training data: fixed-length windows cut from a folder of gameplay videos.

    ds = MarioClips("data_video/mario", sequence_length=16, size=(60, 64), frame_stride=2)
    item = ds[0]
    item["video"]    # float32 (3, 16, 60, 64) in [-1, 1]: 16 frames, every 2nd one, resized
    item["actions"]  # uint8 (16,): the controller byte behind each frame (zeros without a sidecar)

Any video OpenCV decodes works (other sizes, frame rates, grayscale), not only `mariofm record` output.
Each file is decoded once and cached as a uint8 .npy array at the target size; later runs memory-map
the cache instead of decoding video again. Which files a split holds (by file and by level), and the actions
sidecars, are `mariofm.recordings`' part.
"""

from __future__ import annotations

import glob
import hashlib
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mariofm.recordings import (
    VAL_FRACTION,
    VIDEO_SUFFIXES,
    ActionsError,
    NoDataError,
    find_videos,
    load_actions,
    split_files,
)
from mariofm.video import VideoReadError, from_uint8, iter_frames

CACHE_VERSION = 1  # bump when the cached arrays change meaning


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) -> (size[0], size[1], 3); INTER_AREA averages pixels when shrinking (no aliasing)."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    shrink = height <= frame.shape[0] and width <= frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class MarioClips(Dataset):
    """Windows of `sequence_length` frames, every `frame_stride`-th frame, from the videos under `root`.

    A window spans (sequence_length - 1) * frame_stride + 1 source frames; consecutive windows of a
    file start `hop` frames apart (default: half a span). Items are dicts:
        video    float32 (3, T, H, W) in [-1, 1]     actions  uint8 (T,)  (zeros when has_actions is False)
        path     the video file (str)                 start    index of the window's first source frame
    Files that can't be decoded or are shorter than one window are skipped with a warning. A clip whose
    actions sidecar is damaged trains without actions, with a warning naming the file; `require_actions=True`
    (a model conditioned on actions) makes that, and a missing sidecar, an error (see `load_actions`).
    """

    def __init__(self, root: str | Path, sequence_length: int, size: tuple[int, int] = (240, 256),
                 frame_stride: int = 1, split: str = "train", val_fraction: float = VAL_FRACTION,
                 cache_dir: str | Path | None = None, hop: int | None = None, seed: int = 0,
                 progress: bool = True, require_actions: bool = False) -> None:
        for name, value in (("sequence_length", sequence_length), ("frame_stride", frame_stride),
                            ("height", size[0]), ("width", size[1]), ("hop", 1 if hop is None else hop)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split={split!r} must be 'train', 'val' or 'all'")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction!r} must lie in [0, 1), e.g. {VAL_FRACTION}")
        self.root, self.sequence_length, self.frame_stride = Path(root), sequence_length, frame_stride
        self.size, self.split = (int(size[0]), int(size[1])), split
        self.span = (sequence_length - 1) * frame_stride + 1  # source frames under one window
        self.hop = hop or max(1, self.span // 2)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".cache"
        self.require_actions = require_actions  # a bad or missing sidecar: an error (else skip with a warning)
        self.decoded = 0  # files decoded by this constructor (0 when every one came from the cache)
        self._arrays: dict[int, np.ndarray] = {}  # per process: memory maps opened so far
        self._memory: dict[Path, np.ndarray] = {}  # decoded frames when the cache folder is not writable
        if not self.root.is_dir():
            raise NoDataError(self.root, f"the data folder {self.root} does not exist")
        videos = find_videos(self.root)
        if not videos:
            raise NoDataError(self.root, f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {self.root}")
        # decode (or find in the cache) every file, so that the split below is made among usable ones
        usable: dict[str, int] = {}  # name -> frame count
        problems = []
        for video in tqdm(videos, desc="loading videos", unit="file", disable=not progress, leave=False):
            name = video.relative_to(self.root).as_posix()
            try:
                count = len(self._load(video)[0])
            except VideoReadError as err:
                warnings.warn(f"skipping {err}", stacklevel=2)
                problems.append(f"{name}: unreadable")
                continue
            if count < self.span:
                warnings.warn(f"skipping {video}: {count} frames is shorter than one window of {self.span} "
                              f"(sequence_length={sequence_length}, frame_stride={frame_stride})", stacklevel=2)
                problems.append(f"{name}: {count} frames < {self.span}")
                continue
            usable[name] = count
        if not usable:
            raise NoDataError(self.root, f"no usable video in {self.root} ({'; '.join(problems)})")
        chosen = split_files(list(usable), split, val_fraction, seed, root=self.root)
        if not chosen:
            raise NoDataError(self.root, f"the {split!r} split of {self.root} is empty: it holds only "
                                         f"{len(usable)} usable video file(s); record more, or use split='all'")

        self.files = [self.root / name for name in chosen]  # the usable videos of this split
        self.cache_files: list[Path | None] = []  # their cached frames (None: kept in memory)
        self.actions: list[np.ndarray | None] = []
        self.windows: list[tuple[int, int]] = []  # (file index, start frame)
        for index, path in enumerate(self.files):
            frames, cache_file = self._load(path)  # from the cache now (or from memory)
            self.cache_files.append(cache_file)
            if cache_file is None:
                self._arrays[index] = frames
            self.actions.append(self._load_actions(path, len(frames)))
            self.windows += [(index, start) for start in range(0, len(frames) - self.span + 1, self.hop)]
        self._memory.clear()  # frames of the other split, if the cache was not writable

    @classmethod
    def from_config(cls, cfg, root: str | Path, split: str = "train", **kwargs) -> MarioClips:
        """The dataset a Config trains on: its frame size, sequence_length and frame_stride."""
        if cfg.video_channels != 3:
            raise ValueError(f"MarioClips gives RGB video; set video_channels=3 (got {cfg.video_channels})")
        return cls(root, cfg.sequence_length, (cfg.video_height, cfg.video_width), cfg.frame_stride, split,
                   **kwargs)

    # --- the decoded-frame cache -----------------------------------------------------------------------

    def _cache_path(self, path: Path) -> tuple[Path, str]:
        """<cache_dir>/<name>.<hash of path>.<H>x<W>.<hash of source size, mtime and settings>.npy

        Each frame size has its own file (a notebook and training may read the same video at two sizes); a
        changed source file leaves its old cache behind, and `_load` deletes it (same prefix, other hash)."""
        stat = path.stat()
        where = hashlib.sha1(path.resolve().as_posix().encode()).hexdigest()[:8]
        what = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}:{self.size}:{CACHE_VERSION}".encode())
        prefix = f"{path.stem}.{where}.{self.size[0]}x{self.size[1]}"
        return self.cache_dir / f"{prefix}.{what.hexdigest()[:8]}.npy", prefix

    def _load(self, path: Path) -> tuple[np.ndarray, Path | None]:
        """The file's frames at self.size, uint8 (N, H, W, 3): memory-mapped from the cache, else decoded."""
        cache_file, prefix = self._cache_path(path)
        if path in self._memory:
            return self._memory[path], None
        if cache_file.is_file():
            try:
                return np.load(cache_file, mmap_mode="r"), cache_file
            except (OSError, ValueError):
                pass  # a damaged cache file: decode again
        frames = np.stack([resize_frame(f, self.size) for f in iter_frames(path)])
        self.decoded += 1
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.cache_dir.glob(f"{glob.escape(prefix)}.*.npy"):  # this video before it changed
                if stale != cache_file:  # (another process may have just written the current one)
                    stale.unlink(missing_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                np.save(f, frames)
            os.replace(tmp, cache_file)  # atomic: other processes never see half a file
        except OSError as err:
            warnings.warn(f"cannot write the frame cache in {self.cache_dir} ({err}); keeping {path.name} in "
                          "memory. Pass cache_dir= a writable folder to decode only once", stacklevel=3)
            self._memory[path] = frames
            return frames, None
        return np.load(cache_file, mmap_mode="r"), cache_file

    def _load_actions(self, path: Path, n_frames: int) -> np.ndarray | None:
        """The clip's actions, or None without a sidecar. A bad sidecar is an error when `require_actions`
        (a model that needs them), else a warning naming it, and the clip trains without actions."""
        sidecar = path.with_name(path.stem + ".actions.npy")
        if not sidecar.is_file():
            if self.require_actions:
                raise ActionsError(f"{sidecar} is missing: this model needs the actions behind every frame")
            return None
        try:
            return load_actions(sidecar, n_frames)
        except ActionsError as err:
            if self.require_actions:
                raise
            warnings.warn(f"ignoring the actions of {path.name}: {err}", stacklevel=3)
            return None

    def frames(self, index: int) -> np.ndarray:
        """All cached frames of file `index`, uint8 (N, H, W, 3) (a memory map)."""
        if index not in self._arrays:
            self._arrays[index] = np.load(self.cache_files[index], mmap_mode="r")
        return self._arrays[index]

    def __getstate__(self) -> dict:
        # DataLoader workers get the paths, not the memory maps: each process maps the files itself
        state = self.__dict__.copy()
        state["_arrays"] = {i: a for i, a in self._arrays.items() if self.cache_files[i] is None}
        return state

    # --- Dataset ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, i: int) -> np.ndarray:
        """Window i as uint8 (T, H, W, 3) RGB, e.g. to display or to compare with generated video."""
        return np.array(self._window(i))  # a copy: the cache's memory map stays untouched

    def _window(self, i: int) -> np.ndarray:
        index, start = self.windows[i]
        return self.frames(index)[start:start + self.span:self.frame_stride]

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        i %= len(self)
        index, start = self.windows[i]
        video = from_uint8(self._window(i))  # (T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]
        actions = self.actions[index]
        has_actions = actions is not None
        window_actions = actions[start:start + self.span:self.frame_stride] if has_actions \
            else np.zeros(self.sequence_length, np.uint8)
        return {"video": video, "actions": torch.from_numpy(np.array(window_actions)),
                "has_actions": has_actions, "path": str(self.files[index]), "start": start}

    def __repr__(self) -> str:
        return (f"MarioClips({str(self.root)!r}, split={self.split!r}: {len(self.files)} files, {len(self)} "
                f"windows of {self.sequence_length} frames, stride {self.frame_stride}, size {self.size})")


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack the tensor entries of data set items into a batch, {"video": (B, C, T, H, W), "actions": (B, T)};
    the rest (file names, start frames, flags) is dropped. Training takes every batch in this form."""
    return {k: torch.stack([item[k] for item in items]) for k, v in items[0].items() if torch.is_tensor(v)}


def real_clips(root: str | Path, n: int, size: tuple[int, int] = (240, 256), sequence_length: int = 16,
               frame_stride: int = 1, split: str = "val", seed: int = 0) -> np.ndarray:
    """n real windows as uint8 (N, T, H, W, 3), for metrics and notebooks.

    The choice depends only on the arguments and the files (seed picks the windows; the train/val
    split is MarioClips' default one). With fewer than n windows, all are returned, with a warning.
    """
    ds = MarioClips(root, sequence_length, size, frame_stride, split, progress=False)
    if n > len(ds):
        warnings.warn(f"asked for {n} real clips but the {split!r} split has only {len(ds)} windows; "
                      "returning them all", stacklevel=2)
    chosen = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    return np.stack([ds.window(int(i)) for i in chosen])


__all__ = ["MarioClips", "collate", "real_clips", "resize_frame"]
