"""The model shipped in checkpoints/: it loads without unpickling, matches its card, and generates clips that
are measurably closer to real gameplay than an untrained model's (so a corrupted or stand-in file fails)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from mariofm.checkpoint import SHIPPED, load_model
from mariofm.config import Config
from mariofm.data import real_clips
from mariofm.metrics import VideoFeatures, frechet_distance, palette_fidelity
from mariofm.sample import noise_for, sample_videos
from mariofm.unet import VideoUNet

CARD = SHIPPED.with_suffix(".json")


def test_card_matches_the_file():
    card = json.loads(CARD.read_text())
    assert card["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert SHIPPED.stat().st_size < 20 * 2**20
    with safe_open(SHIPPED, "pt") as f:
        assert json.loads(f.metadata()["config"]) == card["config"]
    _, cfg = load_model()
    assert cfg == Config.from_dict(card["config"])  # fields added since it was trained keep their defaults
    for key in ("train_fm_loss", "val_fm_loss", "steps", "wall_minutes", "hardware"):
        assert card["training"][key] is not None, key


def test_corrupted_file_is_refused(tmp_path):
    bad = tmp_path / SHIPPED.name
    shutil.copy(SHIPPED, bad)
    data = bytearray(bad.read_bytes())
    data[8:40] = b"\xff" * 32  # clobber the header
    bad.write_bytes(bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - safetensors raises its own error types
        load_model(bad)


def test_shipped_model_beats_an_untrained_one(mario_clips):
    trained, cfg = load_model()
    torch.manual_seed(0)
    untrained = VideoUNet(cfg).eval()
    n = 8
    real = real_clips(mario_clips, n, (cfg.video_height, cfg.video_width), cfg.sequence_length,
                      cfg.frame_stride, split="all", seed=0)
    noise = noise_for(cfg, len(real), seed=0)
    fake = sample_videos(trained, noise, steps=10, solver="heun")
    baseline = sample_videos(untrained, noise, steps=10, solver="heun")
    net = VideoFeatures(0)
    fd_trained, fd_untrained = frechet_distance(net(fake), net(real)), frechet_distance(net(baseline), net(real))
    assert fd_trained < 0.5 * fd_untrained, (fd_trained, fd_untrained)
    pal_trained = palette_fidelity(fake, real)["in_palette"]
    pal_untrained = palette_fidelity(baseline, real)["in_palette"]
    assert pal_trained > pal_untrained + 0.1, (pal_trained, pal_untrained)
