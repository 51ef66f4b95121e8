"""mariofm.video: lossless AVI round trips, other encoders, GIF/MP4 output, grids, tensor conversion, bad files."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mariofm.video import (
    AviWriter,
    VideoReadError,
    gif_bytes,
    read_frames,
    to_uint8,
    video_grid,
    write_avi,
    write_gif,
    write_mp4,
)


def palette_frames(t: int, h: int, w: int, colours: int = 24, seed: int = 0) -> np.ndarray:
    """NES-like frames: few distinct colours, sharp edges, noise a lossy codec would smear."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    return palette[rng.integers(0, colours, (t, h, w))]


@pytest.mark.parametrize("size", [(240, 256), (60, 64), (38, 50)])
def test_avi_round_trip_is_pixel_exact(tmp_path, size):
    frames = palette_frames(5, *size)
    path = write_avi(tmp_path / "sub" / "clip.avi", frames, fps=30)  # also creates the folder
    back = read_frames(path)
    assert back.dtype == np.uint8 and back.shape == frames.shape
    np.testing.assert_array_equal(back, frames)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30)
    assert cap.get(cv2.CAP_PROP_FOURCC) == cv2.VideoWriter_fourcc(*"MPNG")
    cap.release()


def test_real_gameplay_round_trip(mario_clips, tmp_path):
    frames = read_frames(sorted(mario_clips.glob("*.avi"))[0])
    np.testing.assert_array_equal(read_frames(write_avi(tmp_path / "copy.avi", frames, 30)), frames)


def test_avi_writer_checks_frames_and_folder(tmp_path):
    with AviWriter(tmp_path / "a.avi", 30, (60, 64)) as writer:
        with pytest.raises(ValueError, match=r"\(60, 64, 3\)"):
            writer.write(np.zeros((64, 60, 3), np.uint8))
    with pytest.raises(ValueError, match="even"):
        AviWriter(tmp_path / "odd.avi", 30, (37, 50))  # OpenCV would silently drop a row
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        write_avi(tmp_path / "file" / "clip.avi", palette_frames(2, 8, 8), 30)
    with pytest.raises(ValueError, match="to_uint8"):
        write_avi(tmp_path / "b.avi", np.zeros((2, 8, 8, 3), np.float32), 30)


def test_grayscale_video_reads_as_rgb(tmp_path):
    gray = palette_frames(6, 48, 40)[..., 0]
    path = tmp_path / "gray.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MPNG"), 25, (40, 48), isColor=False)
    assert writer.isOpened()
    for frame in gray:
        writer.write(frame)
    writer.release()
    rgb = read_frames(path)
    assert rgb.shape == (6, 48, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


@pytest.mark.parametrize("size", [(60, 64), (240, 256), (32, 32)])
def test_mp4_keeps_even_sizes_exactly(mario_clips, tmp_path, size):
    real = read_frames(sorted(mario_clips.glob("*.avi"))[0])[:12]
    frames = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in real])
    back = read_frames(write_mp4(tmp_path / "clip.mp4", frames, fps=15))
    assert back.shape == frames.shape
    # lossy, but close: H.264 at quality 8 keeps NES frames within a few grey levels on average
    assert np.abs(back.astype(int) - frames).mean() < 8


def test_mp4_pads_odd_sizes_by_one_pixel(tmp_path):
    back = read_frames(write_mp4(tmp_path / "odd.mp4", palette_frames(3, 59, 63), fps=10))
    assert back.shape == (3, 60, 64, 3)


def test_gif_is_lossless_for_nes_colours_and_loops(tmp_path):
    frames = palette_frames(4, 60, 64, colours=50)
    for data in (gif_bytes(frames, fps=15), write_gif(tmp_path / "a.gif", frames, fps=15).read_bytes()):
        image = Image.open(io.BytesIO(data))
        assert image.info["loop"] == 0 and image.n_frames == 4
        for i in range(4):
            image.seek(i)
            np.testing.assert_array_equal(np.array(image.convert("RGB")), frames[i])


def test_to_uint8_maps_the_range_and_layouts():
    video = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0]).view(1, 1, 1, 5).expand(3, 1, 1, 5)  # (C, T, H, W)
    out = to_uint8(video)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0]  # clipped outside [-1, 1]
    batch = torch.rand(2, 3, 4, 6, 8) * 2 - 1  # (B, C, T, H, W)
    out = to_uint8(batch)
    assert out.shape == (2, 4, 6, 8, 3)
    expected = ((batch[1, 2, 3, 5, 7] + 1) * 127.5).round()
    assert out[1, 3, 5, 7, 2] == expected
    gray = to_uint8(torch.zeros(1, 2, 4, 4))
    assert gray.shape == (2, 4, 4, 3) and (gray == 128).all()
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_uint8(torch.zeros(2, 2, 4, 4))


def test_video_grid_tiles_row_by_row():
    videos = np.stack([np.full((2, 4, 5, 3), 10 * (i + 1), np.uint8) for i in range(3)])
    grid = video_grid(videos, ncols=2, pad=1)
    assert grid.shape == (2, 2 * 5 + 1, 2 * 6 + 1, 3)
    assert (grid[:, 1:5, 1:6] == 10).all() and (grid[:, 1:5, 7:12] == 20).all()
    assert (grid[:, 6:10, 1:6] == 30).all()
    assert (grid[:, 6:10, 7:12] == 255).all() and (grid[:, 0] == 255).all()  # empty cell and gutters
    assert video_grid(np.zeros((4, 1, 3, 3, 3), np.uint8), pad=0).shape == (1, 6, 6, 3)  # 2x2 by default


def test_bad_files_raise_a_clear_error(tmp_path):
    good = write_avi(tmp_path / "good.avi", palette_frames(40, 64, 64), 30)
    cases = {"empty.avi": b"", "text.avi": b"this is not a video\n" * 20,
             "truncated.avi": good.read_bytes()[: good.stat().st_size // 2]}
    expected = {"empty.avi": "empty", "text.avi": "cannot open", "truncated.avi": "truncated"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VideoReadError, match=expected[name]) as err:
            read_frames(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(tmp_path / "missing.avi")
