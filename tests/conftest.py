"""Shared fixtures. `mario_clips`: a folder of a few short, real gameplay clips recorded once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MARIO_CLIPS = dict(clips=4, frames=48, seed=1, levels="1-1,1-2", frame_skip=2)


@pytest.fixture(scope="session")
def mario_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a folder holding 4 real clips (48 frames at 30 fps each, levels 1-1 and 1-2), recorded with
    `record_clips(**MARIO_CLIPS)`: <stem>.avi, <stem>.actions.npy and <stem>.json per clip.

    Treat it as read-only (copy it to change files); datasets made from it put their frame cache under
    its `.cache` folder unless given another cache_dir.
    """
    from mariofm.record import record_clips

    out = tmp_path_factory.mktemp("mario_clips")
    paths = record_clips(out, progress=False, **MARIO_CLIPS)
    for path in paths:  # every clip has its full length, so tests can cut windows of up to 48 frames
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["frames"] == MARIO_CLIPS["frames"], f"{path.name} ended early: {meta['end_reason']}"
    return out


@pytest.fixture(scope="session")
def smoke_run(mario_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step `smoke` run folder trained on `mario_clips` (checkpoint.pt, video_model.pt, metrics,
    GIFs). Treat it as read-only: copy it (shutil.copytree) to change or resume it."""
    from mariofm.config import preset
    from mariofm.train import train

    return train(preset("smoke"), mario_clips, tmp_path_factory.mktemp("smoke_run") / "run", steps=2,
                 progress=False)
