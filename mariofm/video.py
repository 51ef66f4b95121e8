"""Small video I/O helpers: read any video OpenCV decodes, write lossless AVI / GIF / MP4, tile a grid.

Two array conventions meet here:
    on disk and on screen: uint8 frames (T, H, W, 3) RGB
    in the model:          float tensors (C, T, H, W) or (B, C, T, H, W) in [-1, 1]
`to_uint8` goes from the second to the first; `from_uint8` goes the other way.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch is imported lazily: the recorder's worker processes never need it
    import torch


class VideoReadError(ValueError):
    """A file that cannot be read as a video; the message names the file and what is wrong."""


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while we probe a file: our exception says what went wrong."""
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(old)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frame (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA -> (H, W, 3) RGB."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3) with T >= 1, got {frames.dtype} "
                         f"{frames.shape}; convert model output with mariofm.video.to_uint8 first")
    return frames


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video file one at a time as uint8 (H, W, 3) RGB; see read_frames."""
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: the file is empty (0 bytes); delete it or record it again")
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"{path}: OpenCV cannot open it as a video (not a video file, or a codec "
                                 "this OpenCV build lacks)")
        promised = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))  # from the header; an estimate in some formats
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield _to_rgb(frame)
    finally:
        cap.release()
    if count == 0:
        raise VideoReadError(f"{path}: no frame could be decoded (corrupt or truncated file?)")
    # a cut-off file still decodes its first frames; only the header tells us some are missing.
    # Allow 2% slack: some containers only estimate the count from duration x fps.
    if promised - count > max(1, 0.02 * promised):
        raise VideoReadError(f"{path}: truncated, the header promises {promised} frames but only {count} "
                             "decode; record or copy it again")


def read_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file into uint8 (T, H, W, 3) RGB.

    Grayscale and BGRA sources come back as RGB. Raises VideoReadError when the file is missing,
    empty, not a video, truncated (fewer frames decode than its header promises) or has no frames.
    """
    return np.stack(list(iter_frames(path)))


class AviWriter:
    """Stream uint8 (H, W, 3) RGB frames into a lossless AVI (PNG-compressed frames, FOURCC MPNG).

        with AviWriter("clip.avi", fps=30, size=(240, 256)) as writer:
            writer.write(frame)

    MPNG is lossless (read_frames gives back the exact pixels), small on NES graphics (~3 kB per
    240x256 frame) and fast to decode. Height and width must be even. The parent folder is created
    if needed.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self.size, self.count = Path(path), tuple(size), 0
        if size[0] % 2 or size[1] % 2 or min(size) < 2:
            # OpenCV's FFmpeg writer silently drops the last row/column of odd sizes: refuse instead
            raise ValueError(f"cannot write {self.path}: lossless AVI needs an even height and width >= 2, "
                             f"got {size[0]}x{size[1]}; crop or pad the frames by one pixel")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        height, width = self.size
        with _quiet_opencv():
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MPNG"), float(fps),
                                           (width, height))
        if not self._writer.isOpened():
            raise OSError(f"cannot write {self.path}: OpenCV's VideoWriter did not open (is the folder "
                          "writable, and does this OpenCV build have FFmpeg?)")

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.path}: expected a uint8 frame of shape {(*self.size, 3)}, got "
                             f"{frame.dtype} {frame.shape}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self) -> None:
        self._writer.release()  # writes the AVI index; without it players see a truncated file

    def __enter__(self) -> AviWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_avi(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames to a lossless AVI (MPNG); see AviWriter."""
    frames = _check_frames(frames)
    with AviWriter(path, fps, frames.shape[1:3]) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path


def from_uint8(frames: np.ndarray) -> torch.Tensor:
    """Displayable uint8 RGB frames -> model tensor in [-1, 1], the inverse of `to_uint8`:
    (T, H, W, 3) -> (3, T, H, W) and (N, T, H, W, 3) -> (N, 3, T, H, W) float32, x -> x / 127.5 - 1."""
    import torch

    if frames.dtype != np.uint8 or frames.ndim not in (4, 5) or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames (T, H, W, 3) or (N, T, H, W, 3), got {frames.dtype} "
                         f"{frames.shape}")
    # numpy, one copy: torch's multi-threaded element-wise ops were 4-8x slower here on a busy 2-core machine
    x = np.moveaxis(frames, -1, -4).astype(np.float32, order="C")
    x /= 127.5
    x -= 1
    return torch.from_numpy(x)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Model tensor in [-1, 1] -> displayable uint8 RGB frames.

    (C, T, H, W) -> (T, H, W, 3) and (B, C, T, H, W) -> (B, T, H, W, 3); C is 3 (RGB) or 1 (gray,
    repeated to RGB). Values outside [-1, 1] are clipped: x -> round((x + 1) * 127.5).
    """
    if video.dim() not in (4, 5) or video.shape[-4] not in (1, 3):
        raise ValueError(f"expected a (C, T, H, W) or (B, C, T, H, W) tensor with C = 1 or 3, got shape "
                         f"{tuple(video.shape)}")
    import torch

    x = video.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    x = x.movedim(-4, -1)  # channels last: (..., T, H, W, C)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x.contiguous().numpy()


def video_grid(videos: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile N videos (N, T, H, W, 3) into one (T, H', W', 3) video, row by row, with white gutters.

    ncols defaults to ceil(sqrt(N)), so 4 videos make a 2x2 grid and 6 a 3x2 one.
    """
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3 or len(videos) == 0:
        raise ValueError(f"expected videos of shape (N, T, H, W, 3) with N >= 1, got {videos.shape}")
    n, t, h, w, _ = videos.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((t, nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, dtype=videos.dtype)
    for i, video in enumerate(videos):
        top, left = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        grid[:, top:top + h, left:left + w] = video
    return grid


def _gif_images(frames: np.ndarray) -> list[Image.Image]:
    # an adaptive palette per frame: NES frames use far fewer than 256 colours, so this is lossless
    return [Image.fromarray(f).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            for f in _check_frames(frames)]


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """An animated GIF (looping forever) as bytes, e.g. for `ipywidgets.Image(value=..., format="gif")`.

    GIF stores delays in 1/100 s, so 30 fps plays at 1/0.03 = 33 fps.
    """
    images, buffer = _gif_images(frames), io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)
    return buffer.getvalue()


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames to an animated GIF that loops forever."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gif_bytes(frames, fps))
    return path


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, quality: float = 8) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames to an H.264 MP4 (yuv420p, plays in browsers; lossy).

    yuv420p stores colour at half resolution, so H and W must be even: even sizes (60x64,
    240x256, ...) are written exactly; an odd size gets one repeated edge row/column.
    quality: 0-10 (imageio-ffmpeg's scale), 10 is best.
    """
    import imageio_ffmpeg  # imported here: only this function needs FFmpeg's executable

    frames, path = _check_frames(frames), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=fps,
                                         codec="libx264", quality=quality, macro_block_size=2,
                                         ffmpeg_log_level="error")
    writer.send(None)  # start the generator (and FFmpeg)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


__all__ = ["VideoReadError", "iter_frames", "read_frames", "AviWriter", "write_avi", "from_uint8", "to_uint8",
           "video_grid", "gif_bytes", "write_gif", "write_mp4"]
