"""mariofm.data and mariofm.recordings: windows, resize and stride, the split, the frame cache, other encoders, bad
input, and the folder the notebooks find (find_or_record)."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mariofm.config import preset
from mariofm.data import MarioClips, real_clips
from mariofm.recordings import DATA_ENV, NoDataError, find_or_record, level_of, split_files
from mariofm.video import read_frames, write_avi, write_mp4


def copy_clips(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


def test_items_have_the_documented_shapes(mario_clips, tmp_path):
    ds = MarioClips(mario_clips, sequence_length=8, size=(60, 64), frame_stride=2, split="all",
                    cache_dir=tmp_path, progress=False)
    # 4 files of 48 frames; a window spans 15 frames, windows start 7 frames apart: 0, 7, ..., 28, 35
    assert len(ds.files) == 4 and len(ds) == 4 * 5
    item = ds[3]
    assert item["video"].shape == (3, 8, 60, 64) and item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() < item["video"].max() <= 1
    assert item["actions"].shape == (8,) and item["actions"].dtype == torch.uint8 and item["has_actions"]
    assert Path(item["path"]).parent == mario_clips and item["start"] == 21
    actions = np.load(Path(item["path"]).with_name(Path(item["path"]).stem + ".actions.npy"))
    np.testing.assert_array_equal(item["actions"].numpy(), actions[21:21 + 15:2])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["video"].shape == (3, 3, 8, 60, 64) and batch["actions"].shape == (3, 8)


@pytest.mark.parametrize("size, stride", [((60, 64), 3), ((240, 256), 1)])
def test_stride_and_resize_match_opencv(mario_clips, tmp_path, size, stride):
    ds = MarioClips(mario_clips, sequence_length=5, size=size, frame_stride=stride, split="all",
                    cache_dir=tmp_path, hop=10, progress=False)
    item = ds[len(ds) - 1]
    frames = read_frames(item["path"])[item["start"]:item["start"] + 4 * stride + 1:stride]
    expected = np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in frames])
    np.testing.assert_array_equal(ds.window(len(ds) - 1), expected)
    video = torch.from_numpy(expected).permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(item["video"], video)


def test_split_is_by_file_disjoint_and_deterministic(mario_clips, tmp_path):
    kwargs = dict(sequence_length=4, size=(30, 32), cache_dir=tmp_path, progress=False)
    train, val = MarioClips(mario_clips, split="train", **kwargs), MarioClips(mario_clips, split="val", **kwargs)
    assert len(val.files) >= 1 and len(train.files) >= 1
    assert not set(train.files) & set(val.files)
    assert set(train.files) | set(val.files) == set(mario_clips.glob("*.avi"))
    assert MarioClips(mario_clips, split="val", **kwargs).files == val.files
    assert all(Path(val[i]["path"]) in val.files for i in range(len(val)))


def test_split_holds_out_every_level_in_proportion_by_largest_remainder():
    # 10 files of 1-1, 6 of 1-2, 3 of 4-2, 1 of 8-1 and 5 without a level: 25 files, f = 0.2 -> k = 5 val files.
    # Quotas 2.0, 1.2, 0.6, 0.2, 1.0 -> floors 2, 1, 0, 0, 1 (4 files); the one left goes to the largest
    # remainder, 4-2's 0.6.
    counts = {"1-1": 10, "1-2": 6, "4-2": 3, "8-1": 1}
    names = [f"clip_s0_{i:04d}_{lvl}.avi" for lvl, n in counts.items() for i in range(n)]
    names += [f"gameplay_{i}.avi" for i in range(5)]
    val = split_files(names, "val", 0.2, seed=0)
    per_level = {lvl: sum(v.endswith(f"_{lvl}.avi") for v in val) for lvl in counts}
    assert per_level == {"1-1": 2, "1-2": 1, "4-2": 1, "8-1": 0}
    assert sum(v.startswith("gameplay_") for v in val) == 1
    train = split_files(names, "train", 0.2, seed=0)
    assert sorted(train + val) == sorted(names) and not set(train) & set(val)
    assert split_files(names[::-1], "val", 0.2, seed=0) == val[::-1]  # the order of names does not matter
    assert split_files(names, "val", 0.2, seed=1) != val  # the seed picks which files of a level
    assert len(split_files(["a.avi", "b.avi"], "val", 0.0, seed=0)) == 1  # >= 1 val file from 2 files
    assert len(split_files(["a.avi", "b.avi"], "train", 0.99, seed=0)) == 1  # and >= 1 train file
    with pytest.raises(ValueError, match="val_fraction"):
        split_files(names, "val", 1.0)


def test_split_reads_the_level_from_real_sidecars(mario_clips, tmp_path):
    # the fixture holds 2 recordings of 1-1 and 2 of 1-2; with f = 0.5 each level gives up exactly one file.
    # Renamed, the files keep their level through the JSON sidecar `mariofm record` writes beside each video
    root = tmp_path / "renamed"
    root.mkdir()
    levels = {}
    for i, video in enumerate(sorted(mario_clips.glob("*.avi"))):
        for suffix in (".avi", ".json", ".actions.npy"):
            shutil.copyfile(video.with_name(video.stem + suffix), root / f"take{i}{suffix}")
        levels[f"take{i}.avi"] = level_of(root / f"take{i}.avi")
    assert sorted(levels.values()) == ["1-1", "1-1", "1-2", "1-2"]
    kwargs = dict(sequence_length=4, size=(30, 32), cache_dir=tmp_path / "cache", progress=False)
    val = MarioClips(root, split="val", val_fraction=0.5, **kwargs)
    assert sorted(levels[p.name] for p in val.files) == ["1-1", "1-2"]
    # without sidecars the names say nothing: the four files form one group and two of them are held out
    for sidecar in root.glob("*.json"):
        sidecar.unlink()
    assert level_of(root / "take0.avi") is None
    assert len(MarioClips(root, split="val", val_fraction=0.5, **kwargs).files) == 2


def test_cache_skips_decoding_and_notices_changed_files(mario_clips, tmp_path):
    root, cache = copy_clips(mario_clips, tmp_path / "clips"), tmp_path / "cache"
    first = MarioClips(root, 6, (60, 64), split="all", cache_dir=cache, progress=False)
    assert first.decoded == 4 and len(list(cache.glob("*.npy"))) == 4
    again = MarioClips(root, 6, (60, 64), split="all", cache_dir=cache, progress=False)
    assert again.decoded == 0
    torch.testing.assert_close(again[5]["video"], first[5]["video"])
    assert isinstance(again.frames(0), np.memmap)  # epochs read the cache, not the video

    changed = first.files[0]
    write_avi(changed, read_frames(changed)[::-1], fps=30)  # new content, new mtime
    third = MarioClips(root, 6, (60, 64), split="all", cache_dir=cache, progress=False)
    assert third.decoded == 1 and len(list(cache.glob("*.npy"))) == 4  # the stale entry was replaced
    np.testing.assert_array_equal(third.frames(0)[0], cv2.resize(read_frames(changed)[0], (64, 60),
                                                                 interpolation=cv2.INTER_AREA))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # `touch`
    assert MarioClips(root, 6, (60, 64), split="all", cache_dir=cache, progress=False).decoded == 1
    assert MarioClips(root, 6, (30, 32), split="all", cache_dir=cache, progress=False).decoded == 4  # new size
    assert MarioClips(root, 6, (60, 64), split="all", cache_dir=cache, progress=False).decoded == 0  # both kept


def test_dataset_pickles_without_its_frames(mario_clips, tmp_path):
    ds = MarioClips(mario_clips, 8, split="all", cache_dir=tmp_path, progress=False)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 100_000  # paths, not 240x256 frames
    torch.testing.assert_close(clone[7]["video"], ds[7]["video"])


def test_videos_from_other_encoders_load(mario_clips, tmp_path):
    root = tmp_path / "other"
    real = read_frames(sorted(mario_clips.glob("*.avi"))[0])
    write_mp4(root / "imageio.mp4", real[:20], fps=24)  # H.264 written by imageio-ffmpeg
    gray = cv2.cvtColor(cv2.resize(real[0], (128, 120)), cv2.COLOR_RGB2GRAY)
    writer = cv2.VideoWriter(str(root / "gray.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 120), False)
    for shift in range(12):
        writer.write(np.roll(gray, 2 * shift, axis=1))
    writer.release()
    ds = MarioClips(root, 10, (60, 64), split="all", cache_dir=tmp_path / "cache", progress=False)
    assert [p.name for p in ds.files] == ["gray.avi", "imageio.mp4"]
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (3, 10, 60, 64) and not item["has_actions"]
        assert (item["actions"] == 0).all()
    gray_video = ds[0]["video"]
    torch.testing.assert_close(gray_video[0], gray_video[2])  # grey in, equal RGB channels out


def test_missing_or_empty_folder_says_how_to_record(tmp_path):
    for root in (tmp_path / "nothing", tmp_path):
        with pytest.raises(NoDataError, match="python -m mariofm record --out .* --clips 40") as err:
            MarioClips(root, 8)
        assert isinstance(err.value, FileNotFoundError)


def test_find_or_record_picks_the_folder_and_records_nothing_when_it_holds_clips(mario_clips, tmp_path,
                                                                                 monkeypatch, capsys):
    """$MARIOFM_DATA wins, else <root>/data_video/mario; a smoke run without videos there reads
    outputs/clips_smoke. Every folder chosen here holds real clips, so nothing may be recorded: no file appears and
    no "recording" line is printed (recording itself is what the mario_clips fixture and test_record exercise)."""

    def files() -> set[Path]:
        return {p for p in tmp_path.rglob("*") if ".cache" not in p.parts}

    monkeypatch.setenv(DATA_ENV, str(mario_clips))
    assert find_or_record(tmp_path, smoke=True) == mario_clips  # even in a smoke run
    assert f"data: {mario_clips} ($MARIOFM_DATA) holds 4 clips" in capsys.readouterr().out

    monkeypatch.delenv(DATA_ENV)
    smoke = copy_clips(mario_clips, tmp_path / "outputs" / "clips_smoke")
    (tmp_path / "data_video" / "mario").mkdir(parents=True)  # there, but empty
    before = files()
    assert find_or_record(tmp_path, smoke=True) == smoke
    assert "data_video/mario has none) holds 4 clips" in capsys.readouterr().out
    assert files() == before

    (tmp_path / "data_video" / "mario").rmdir()
    full = copy_clips(mario_clips, tmp_path / "data_video" / "mario")
    sorted(full.glob("*.avi"))[0].unlink()  # 3 clips: tells this folder from the smoke one
    before = files()
    for smoke_run in (True, False):  # real data in data_video/mario is used by smoke runs too
        assert find_or_record(str(tmp_path), smoke=smoke_run) == full
        out = capsys.readouterr().out
        assert f"data: {full} (the default folder) holds 3 clips" in out and "recording" not in out
    assert files() == before


def test_broken_and_short_files_are_skipped_with_a_warning(mario_clips, tmp_path):
    root = copy_clips(mario_clips, tmp_path / "clips")
    good = sorted(root.glob("*.avi"))
    (root / "zero.avi").write_bytes(b"")
    (root / "notes.avi").write_text("not a video\n" * 50)
    (root / "cut.avi").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 3])
    write_avi(root / "short.avi", read_frames(good[1])[:5], fps=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = MarioClips(root, 8, (30, 32), split="all", cache_dir=tmp_path / "cache", progress=False)
    messages = " | ".join(str(w.message) for w in caught)
    for name, reason in [("zero.avi", "empty"), ("notes.avi", "cannot open"), ("cut.avi", "truncated"),
                         ("short.avi", "shorter than one window")]:
        assert name in messages and reason in messages
    assert sorted(ds.files) == good


def test_no_usable_file_is_a_clear_error(tmp_path):
    (tmp_path / "zero.avi").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NoDataError, match=r"no usable video .*zero\.avi: unreadable"):
            MarioClips(tmp_path, 8)


def test_from_config_and_real_clips(mario_clips, tmp_path):
    cfg = preset("smoke")
    ds = MarioClips.from_config(cfg, mario_clips, "train", cache_dir=tmp_path, progress=False)
    assert ds[0]["video"].shape == (3, cfg.sequence_length, cfg.video_height, cfg.video_width)
    clips = real_clips(mario_clips, 3, size=(60, 64), sequence_length=6, frame_stride=2, split="all", seed=1)
    assert clips.shape == (3, 6, 60, 64, 3) and clips.dtype == np.uint8
    np.testing.assert_array_equal(clips, real_clips(mario_clips, 3, (60, 64), 6, 2, "all", seed=1))
    assert not np.array_equal(clips, real_clips(mario_clips, 3, (60, 64), 6, 2, "all", seed=2))
    with pytest.warns(UserWarning, match="only"):
        assert len(real_clips(mario_clips, 1000, (30, 32), 16, 1, "val")) < 1000


def test_bad_arguments(mario_clips):
    with pytest.raises(ValueError, match="split"):
        MarioClips(mario_clips, 8, split="test")
    with pytest.raises(ValueError, match="sequence_length=0"):
        MarioClips(mario_clips, 0)
