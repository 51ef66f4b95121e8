"""Training and generation end to end, on real recorded clips at the `smoke` size."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from mariofm.checkpoint import CHECKPOINT, MODEL, ConfigMismatchError, load_checkpoint, load_model
from mariofm.config import Config, preset
from mariofm.data import MarioClips, collate
from mariofm.device import Dist
from mariofm.flow import fm_loss
from mariofm.generate import generate
from mariofm.runlog import read_metrics
from mariofm.schedule import Budget
from mariofm.state import Run
from mariofm.stopping import TrainingDiverged
from mariofm.train import train, train_step
from mariofm.unet import VideoUNet

ROOT = Path(__file__).resolve().parent.parent


def smoke(**overrides):
    return preset("smoke", **overrides)


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run / CHECKPOINT)
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"ema.{k}": v for k, v in state["ema"].items()}}


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max((x.float() - b[k].float()).abs().max().item() for k, x in a.items())
    assert worst <= atol, f"weights differ by up to {worst}"


def test_loss_falls_when_overfitting_one_real_clip(mario_clips):
    cfg = smoke(base_ch=16)
    clip = MarioClips.from_config(cfg, mario_clips, split="all")[0]["video"][None]
    torch.manual_seed(0)
    model = VideoUNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn((8, *clip.shape[1:]), generator=g), torch.linspace(0.05, 0.95, 8)
    x0 = clip.expand(8, -1, -1, -1, -1)

    def held_loss() -> float:
        with torch.no_grad():
            return fm_loss(model, x0, t=t, noise=noise)[0].item()

    before = held_loss()
    for _ in range(60):  # batches of 4 at lr 4e-3: measured 0.27 of the first loss after 50 steps, 0.42 after 25
        loss, _, _ = fm_loss(model, x0[:4], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_loss()
    # the untrained (zero-output) model's loss is E|ε - x0|² ≈ 1 + mean(x0²); fitting one clip must halve it
    assert after < 0.5 * before, (before, after)


def test_gradient_accumulation_equals_the_big_batch_step(mario_clips):
    # float64, so that the only difference, the order of the sums, stays far below the tolerance
    cpu, weights_after = torch.device("cpu"), []
    torch.set_default_dtype(torch.float64)
    try:
        cfg = smoke(batch_size=4, dropout=0.0)
        clips = MarioClips.from_config(cfg, mario_clips, split="all")
        batch = collate([clips[i] for i in range(4)])
        batch["video"] = batch["video"].double()
        for accum in (1, 2, 4):
            run = Run.create(cfg.replace(grad_accum=accum), cpu, Budget(steps=10), steps_per_epoch=10)
            before = {k: v.clone() for k, v in run.model.state_dict().items()}
            loss, per_sample, _ = train_step(run.model, run, batch, Dist(), cpu)
            assert per_sample.shape == (4,) and loss == pytest.approx(per_sample.mean().item(), abs=1e-12)
            weights_after.append({**{f"model.{k}": v.clone() for k, v in run.model.state_dict().items()},
                                  **{f"ema.{k}": v.clone() for k, v in run.ema.state_dict().items()}})
    finally:
        torch.set_default_dtype(torch.float32)
    moved = max((weights_after[0][f"model.{k}"] - v).abs().max().item() for k, v in before.items())
    assert moved > 1e-5  # the step did something, so equal weights mean equal steps
    for accumulated in weights_after[1:]:
        assert_same_weights(weights_after[0], accumulated, atol=1e-12)


def test_run_folder_has_what_the_seed_promised(smoke_run):
    """The shared 2-step smoke run (conftest): its config, a training row at the last step with a finite loss,
    the learning rate and 10 loss-by-t bins, a validation row and a pair of GIFs per epoch, the loss curve as an
    image, and checkpoints that hold step 2."""
    assert Config.from_dict(json.loads((smoke_run / "config.json").read_text())) == smoke()
    rows = read_metrics(smoke_run)
    train_rows, val_rows = [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == [2]
    for r in train_rows:
        assert 0 < r["loss"] < 5 and 0 < r["lr"] <= smoke().lr and len(r["loss_by_t"]) == 10
    assert val_rows and all(0 < r["val_loss"] < 5 for r in val_rows)
    epochs = sorted(int(p.stem.removeprefix("sample_epoch")) for p in smoke_run.glob("sample_epoch*.gif"))
    assert epochs == [r["epoch"] for r in val_rows]
    assert sorted(p.name for p in smoke_run.glob("grid_epoch*.gif")) == [f"grid_epoch{e}.gif" for e in epochs]
    with Image.open(smoke_run / "loss_curve.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
    assert load_checkpoint(smoke_run / CHECKPOINT)["step"] == load_checkpoint(smoke_run / MODEL)["step"] == 2


RESUMED = smoke(batch_size=16, dropout=0.2)  # batch 16: epochs of a few steps, so stops fall inside and at the
# end of epochs; dropout checks that the random masks continue where they were


@pytest.fixture(scope="module")
def whole_run(mario_clips, tmp_path_factory) -> Path:
    """12 steps of RESUMED without a stop: what every stopped-and-resumed run must reach."""
    return train(RESUMED, mario_clips, tmp_path_factory.mktemp("whole") / "run", steps=12, progress=False)


def test_snapshots_keep_each_checkpoint_s_weights(mario_clips, tmp_path):
    run = train(smoke(), mario_clips, tmp_path / "run", steps=4, checkpoint_every=2, keep_snapshots=True,
                progress=False)
    assert sorted(p.name for p in run.glob("video_model_step*.pt")) == ["video_model_step2.pt", "video_model_step4.pt"]
    assert_same_weights(load_checkpoint(run / "video_model_step4.pt")["ema"], load_checkpoint(run / MODEL)["ema"])
    early, _ = load_model(run / "video_model_step2.pt")
    late, _ = load_model(run / MODEL)
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), late.state_dict().values()))


@pytest.mark.parametrize("stops", [(3,), (4, 9)])
def test_resume_reaches_the_same_weights(whole_run, mario_clips, tmp_path, stops):
    cfg, whole = RESUMED, whole_run
    part = tmp_path / "part"
    train(cfg, mario_clips, part, steps=12, stop_at=stops[0], progress=False)
    for stop in stops[1:]:
        train(None, mario_clips, part, resume=True, stop_at=stop, progress=False)
        assert load_checkpoint(part / CHECKPOINT)["step"] == stop
    train(None, mario_clips, part, resume=True, progress=False)
    assert load_checkpoint(part / CHECKPOINT)["step"] == 12
    assert_same_weights(weights(whole), weights(part))
    assert sorted(p.name for p in whole.glob("*.gif")) == sorted(p.name for p in part.glob("*.gif"))


def test_resuming_a_finished_run_asks_for_a_budget(smoke_run, mario_clips, tmp_path):
    run = shutil.copytree(smoke_run, tmp_path / "run")
    with pytest.raises(ValueError, match="already finished at step 2"):
        train(None, mario_clips, run, resume=True, progress=False)
    train(None, mario_clips, run, resume=True, steps=3, progress=False)  # a larger budget extends it
    assert load_checkpoint(run / CHECKPOINT)["step"] == 3


@pytest.mark.parametrize("budget", [dict(steps=0), dict(epochs=0), dict(minutes=0)])
def test_empty_budgets_are_refused(mario_clips, tmp_path, budget):
    with pytest.raises(ValueError, match="must be positive"):
        train(smoke(), mario_clips, tmp_path / "run", progress=False, **budget)


def test_wall_clock_budget_stops_in_time(mario_clips, tmp_path):
    run = train(smoke(), mario_clips, tmp_path / "run", minutes=0.05, progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    assert state["step"] >= 1 and 3.0 <= state["elapsed"] < 30


def test_a_single_video_trains_and_watches_its_own_clips(mario_clips, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(mario_clips.glob("*.avi"))[0]
    shutil.copy(first, one / first.name)
    run = train(smoke(), one, tmp_path / "run", steps=2, progress=False)
    assert any("val_loss" in line for line in (run / "metrics.jsonl").read_text().splitlines())


def test_sigkill_then_resume(mario_clips, tmp_path):
    run, every = tmp_path / "run", 4
    cmd = [sys.executable, "-m", "mariofm", "train", "--preset", "smoke", "--data", str(mario_clips),
           "--out", str(run), "--steps", "400", "--checkpoint-every", str(every)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / CHECKPOINT).exists() and load_checkpoint(run)["step"] >= 2 * every):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(run / CHECKPOINT)["step"]
    assert saved >= 2 * every and saved % every == 0
    # resume through the CLI for a few more steps: it continues from the saved step, not from zero
    done = subprocess.run([sys.executable, "-m", "mariofm", "train", "--resume", str(run), "--data",
                           str(mario_clips), "--stop-at", str(saved + 3)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(run / CHECKPOINT)["step"] == saved + 3


def test_nan_loss_stops_and_keeps_last_good_checkpoint(mario_clips, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        train(smoke(lr=1e30, warmup_steps=1, grad_clip=1e30), mario_clips, run, steps=50, checkpoint_every=1,
              progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    assert state["step"] >= 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_weights_only_loading_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "checkpoint.pt"
    torch.save({"config": Evil()}, bad)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_config_mismatch_names_the_fields(smoke_run, mario_clips):
    before = (smoke_run / CHECKPOINT).read_bytes()
    with pytest.raises(ConfigMismatchError, match="base_ch.*checkpoint 8 vs requested 16"):
        train(smoke(base_ch=16), mario_clips, smoke_run, resume=True, progress=False)
    assert (smoke_run / CHECKPOINT).read_bytes() == before  # refused before touching the run


def test_ddp_two_gloo_processes_match_one_process(smoke_run, mario_clips, tmp_path):
    one = smoke_run  # the smoke preset, 2 steps, in this one process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # a free port, so parallel test runs don't collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
           "mariofm", "train", "--preset", "smoke", "--data", str(mario_clips), "--out", str(tmp_path / "two"),
           "--steps", "2", "--device", "cpu"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert_same_weights(weights(one), weights(tmp_path / "two"), atol=1e-5)  # sums in another order


def test_generate_writes_gif_and_mp4_and_is_seeded(smoke_run, tmp_path):
    run = smoke_run
    info = generate(run / MODEL, tmp_path / "a", num=2, steps=3, seed=7, mp4=True, progress=False)
    generate(run / MODEL, tmp_path / "b", num=2, steps=3, seed=7, progress=False)
    cfg = load_model(run / MODEL)[1]
    assert info["nfe"] == 5  # heun, 3 steps: 2 per step, the last one Euler (see mariofm.sample.nfe)
    gif = iio.imread(tmp_path / "a" / "generated_video_0.gif", index=None)
    assert gif.shape[:3] == (cfg.sequence_length, cfg.video_height, cfg.video_width)
    mp4 = _read_mp4(tmp_path / "a" / "generated_video_0.mp4")
    assert mp4.shape[:3] == (cfg.sequence_length, cfg.video_height, cfg.video_width)
    for name in ("generated_video_0.gif", "generated_video_1.gif", "generated_videos_grid.gif"):
        a = iio.imread(tmp_path / "a" / name, index=None)
        b = iio.imread(tmp_path / "b" / name, index=None)
        np.testing.assert_array_equal(a, b)


def _read_mp4(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
