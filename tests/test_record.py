"""mariofm.record: real gameplay from the emulator, deterministic clips, sidecars, clear errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MARIO_CLIPS

from mariofm.cli import main
from mariofm.nes import LEFT, RIGHT, ROM_SHA256, SELECT, START, A, B, Game, RomError, find_rom, parse_levels
from mariofm.record import record_clips
from mariofm.video import read_frames

REPO = Path(__file__).resolve().parents[1]
SEED0_CLIP0_60_ACTIONS = "a56cb63c188bd217bd94145a303b9cce7edd0fdf6649c0db96960f9b37ba6080"


def test_find_rom_checks_the_hash():
    rom = find_rom()
    assert rom.name == "super-mario-bros.nes"
    assert hashlib.sha256(rom.read_bytes()).hexdigest() == ROM_SHA256


def test_find_rom_rejects_another_dump(tmp_path, monkeypatch):
    # a package of the same name earlier on sys.path, holding a different ROM
    roms = tmp_path / "gym_super_mario_bros" / "_roms"
    roms.mkdir(parents=True)
    (roms.parent / "__init__.py").write_text("raise ImportError('find_rom must not import the package')\n")
    (roms / "super-mario-bros.nes").write_bytes(b"NES\x1a" + bytes(100))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RomError, match="pip install --force-reinstall fragile-gym-super-mario-bros==7.4.1"):
        find_rom()


def test_game_starts_the_chosen_level():
    game = Game(find_rom())
    assert game.start(4, 2)
    assert game.controllable and game.level == (4, 2, 2)  # area 2: world 4 has an intro scene before 4-2
    frame = game.step(RIGHT)
    assert frame.shape == (240, 256, 3) and frame.dtype == np.uint8


@pytest.mark.parametrize("text, expected", [("1-1", [(1, 1)]), ("1-1, 4-2,8-4", [(1, 1), (4, 2), (8, 4)])])
def test_parse_levels(text, expected):
    assert parse_levels(text) == expected
    assert len(parse_levels(None)) >= 9


@pytest.mark.parametrize("bad", ["9-1", "1-5", "0-1", "1_1", "11", "1-1,", "w1-1"])
def test_parse_levels_rejects_bad_names(bad):
    with pytest.raises(ValueError, match=r"e\.g\. `1-1,4-2`, with worlds 1-8 and stages 1-4"):
        parse_levels(bad)


def test_clips_and_sidecars_agree(mario_clips):
    avis = sorted(mario_clips.glob("*.avi"))
    assert len(avis) == MARIO_CLIPS["clips"]
    spans = []
    for avi in avis:
        frames = read_frames(avi)
        meta = json.loads(avi.with_suffix(".json").read_text())
        actions = np.load(avi.with_name(avi.stem + ".actions.npy"))
        assert frames.shape == (meta["frames"], 240, 256, 3) and frames.dtype == np.uint8
        assert actions.dtype == np.uint8 and actions.shape == (meta["frames"],)
        assert len(meta["mario_x"]) == meta["frames"]
        assert (meta["fps"], meta["frame_skip"], meta["codec"]) == (30, 2, "MPNG")
        assert meta["rom_sha256"] == ROM_SHA256 and meta["seed"] == MARIO_CLIPS["seed"]
        assert f"{meta['world']}-{meta['stage']}" in MARIO_CLIPS["levels"].split(",")
        assert meta["end_reason"] in ("frames", "death", "flagpole", "level_change")
        assert not (actions & (START | SELECT)).any()  # START would pause the game
        assert set(np.unique(actions)) <= {0, RIGHT, LEFT, RIGHT | B, RIGHT | A, RIGHT | B | A, A, LEFT | A}
        assert frames.std(axis=0).mean() > 1  # the picture moves
        spans.append(max(meta["mario_x"]) - min(meta["mario_x"]))
    assert max(spans) > 100  # Mario runs: the level scrolls


def test_recording_is_independent_of_worker_count(mario_clips, tmp_path):
    # clip i depends only on (seed, i): two clips on two workers match the fixture's first two, made by one
    paths = record_clips(tmp_path, **{**MARIO_CLIPS, "clips": 2, "workers": 2}, progress=False)
    assert [p.name for p in paths] == sorted(p.name for p in mario_clips.glob("*.avi"))[:2]
    for path in paths:
        np.testing.assert_array_equal(read_frames(path), read_frames(mario_clips / path.name))
        stem = path.stem
        np.testing.assert_array_equal(np.load(tmp_path / f"{stem}.actions.npy"),
                                      np.load(mario_clips / f"{stem}.actions.npy"))
        assert (tmp_path / f"{stem}.json").read_text() == (mario_clips / f"{stem}.json").read_text()


def _record_cli(out: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "mariofm", "record", "--out", str(out), "--clips", "2", "--frames", "48",
           "--seed", "3"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "recorded 2 clips" in result.stdout
    return sorted(out.glob("*.avi"))


def test_cli_records_the_same_clips_twice(tmp_path):
    first, second = _record_cli(tmp_path / "a"), _record_cli(tmp_path / "b")
    assert len(first) == 2 and [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second):
        frames = read_frames(a)
        assert len(frames) == json.loads(a.with_suffix(".json").read_text())["frames"]
        np.testing.assert_array_equal(frames, read_frames(b))


@pytest.mark.parametrize("levels", ["9-1", "1-1,2-5"])
def test_cli_rejects_bad_levels(levels, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["record", "--out", str(tmp_path), "--levels", levels])
    assert exit_.value.code == 2
    assert "worlds 1-8 and stages 1-4" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_rejects_an_unwritable_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["record", "--out", str(tmp_path / "file" / "clips"), "--clips", "1", "--frames", "4"]) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "--out" in err


def test_record_clips_rejects_bad_numbers(tmp_path):
    with pytest.raises(ValueError, match="frames=0"):
        record_clips(tmp_path, clips=1, frames=0, seed=0)
    with pytest.raises(ValueError, match="seed=-1"):
        record_clips(tmp_path, clips=1, frames=4, seed=-1)


def test_the_push_mood_runs_into_a_wall_and_stays_there(tmp_path):
    """record --push 1: the player only ever holds right + B and never jumps, so in 1-1 a pipe stops Mario (what a
    world model should learn: right held at a wall does not move the camera)."""
    path = record_clips(tmp_path, clips=1, frames=60, seed=0, levels="1-1", push=1.0, progress=False)[0]
    actions, meta = np.load(str(path)[:-4] + ".actions.npy"), json.loads(path.with_suffix(".json").read_text())
    assert set(actions.tolist()) == {RIGHT | B} and meta["push"] == 1.0
    assert len(set(meta["mario_x"])) == 1  # against the pipe all the time, right + B held
    with pytest.raises(ValueError, match=r"push=1\.5 must lie in \[0, 1\]"):
        record_clips(tmp_path / "bad", clips=1, frames=4, seed=0, push=1.5)


def test_push_zero_records_what_the_recorder_recorded_before_the_push_mood(tmp_path):
    """push = 0 draws no extra random number: seed 0's first clip presses the same buttons as before `--push`
    existed (the hash of its 60 actions, recorded with commit 2745ca2), so old data sets can be recorded again."""
    path = record_clips(tmp_path, clips=1, frames=60, seed=0, progress=False)[0]
    actions = np.load(str(path)[:-4] + ".actions.npy")
    assert path.name == "clip_s0_0000_3-2.avi" and len(actions) == 60
    assert hashlib.sha256(actions.tobytes()).hexdigest() == SEED0_CLIP0_60_ACTIONS
