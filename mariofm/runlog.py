"""The run log: what a training run writes down as it goes, and the loss curve drawn from it.

metrics.jsonl holds one JSON object per line: a training row every few steps

    {"step": 120, "epoch": 3, "loss": 0.41, "lr": 0.0005, "clips_per_s": 9.8, "elapsed_s": 61.2, "loss_by_t": [...]}

(`loss` is the mean over the steps since the last row; `loss_by_t` its mean in 10 bins of t, null for an empty
bin) and an evaluation row after every epoch, {"step": 120, "epoch": 3, "val_loss": 0.39}. After every epoch
the EMA model also samples clips from fixed noise into sample_epoch{N}.gif and grid_epoch{N}.gif (a world model:
rollouts from real first frames with the real buttons, beside the real clips, into rollout_epoch{N}.gif), so the
GIFs of a run show one set of clips taking shape.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from mariofm.config import Config
from mariofm.data import collate
from mariofm.flow import conditioning, loss_by_t, validation_loss
from mariofm.rollout import check_world_model, rollout
from mariofm.sample import sample_videos
from mariofm.video import video_grid, write_gif
from mariofm.world_data import held_bits

METRICS = "metrics.jsonl"
LOSS_CURVE = "loss_curve.png"
NUM_SAMPLES = 4  # clips in grid_epoch{N}.gif


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (a run folder means its metrics.jsonl), oldest first."""
    path = Path(path)
    path = path / METRICS if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Writes metrics.jsonl: `add` every step, a training row every `every` steps; `write` any other row.
    A fresh run starts a new log; a resumed one drops the rows written after its checkpoint (they are redone).
    `path=None` logs nothing (the non-main ranks of a multi-GPU run)."""

    def __init__(self, path: Path | None, every: int, resume_step: int | None = None):
        self.path, self.every = path, every
        if path and resume_step is not None and path.exists():
            rows = [r for r in read_metrics(path) if r["step"] <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.file = open(path, "a" if resume_step is not None else "w") if path else None  # noqa: SIM115
        self._reset()

    def _reset(self) -> None:
        self.t, self.losses, self.clips, self.began = [], [], 0, time.perf_counter()

    def add(self, step: int, epoch: int, lr: float, t: torch.Tensor, per_sample: torch.Tensor, elapsed: float,
            last: bool = False) -> dict | None:
        """Collect one step's t and per-sample losses; every `every` steps (and at the `last`) write and return
        their row, else return None."""
        self.t.append(t.cpu())
        self.losses.append(per_sample.cpu())
        self.clips += len(per_sample)
        if step % self.every and not last:
            return None
        t, losses = torch.cat(self.t), torch.cat(self.losses)
        row = dict(step=step, epoch=epoch, loss=losses.mean().item(), lr=lr,
                   clips_per_s=self.clips / (time.perf_counter() - self.began), elapsed_s=round(elapsed, 2),
                   loss_by_t=[None if math.isnan(v) else v for v in loss_by_t(t, losses)[1].tolist()])
        self.write(row)
        self._reset()
        return row

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def plot_losses(rows: list[dict], out: str | Path) -> None:
    """Draw the training loss (running mean) and the validation loss against the step, log scale, into `out`."""
    # a bare Figure, not pyplot: no global backend switch, so a notebook's own plots keep showing
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="train (running mean)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation (EMA, fixed t grid)")
    ax.set(xlabel="step", ylabel="flow-matching loss", yscale="log", title="mariofm training")
    if train or val:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def epoch_samples(model: torch.nn.Module, cfg: Config, noise: torch.Tensor, device: torch.device,
                  batch: dict[str, torch.Tensor]) -> np.ndarray:
    """The clips shown after every epoch, uint8 (N, T, H, W, 3): the model's samples from fixed `noise`,
    conditioned on the held-out `batch` (its first N rows) if the model takes conditions."""
    cond = {k: v[:len(noise)] for k, v in conditioning(model, batch).items()}
    return sample_videos(model, noise, cfg.sample_steps, cfg.solver, device=device, cond=cond)


def epoch_rollouts(model: torch.nn.Module, clips, num: int = 2, frames: int = 24, seed: int = 0) -> np.ndarray:
    """A world model's clips shown after every epoch: for the first `num` recordings of `clips` (a MarioClips at
    the model's size and stride), the real frames (left) and a rollout from the same first K frames with the real
    buttons (right), in a grid of `num` rows. uint8 (frames, H', W', 3)."""
    k, stride, pairs = check_world_model(model), model.cfg.frame_stride, []
    for i in range(min(num, len(clips.files))):
        kept = np.arange(0, len(clips.frames(i)), stride)[:k + frames]
        real = np.array(clips.frames(i)[kept])
        made = rollout(model, real[:k], held_bits(clips.actions[i], kept, stride), seed=seed)
        pairs += [real[k:], made]
    n = min(len(p) for p in pairs)  # a clip that ended early (a death) is shorter
    return video_grid(np.stack([p[:n] for p in pairs]), ncols=2)


class EpochEvaluation:
    """After an epoch: samples from the EMA model with fixed noise (comparable across epochs and runs) as
    sample_epoch{N}.gif / grid_epoch{N}.gif (a world model: rollout_epoch{N}.gif, epoch_rollouts), and
    the validation loss at a fixed t grid with fixed noise."""

    def __init__(self, cfg: Config, held_out, out: Path, dev: torch.device, log: MetricsLog, clips: int = 16):
        shape = (NUM_SAMPLES, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
        self.noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed + 2))
        # spread over the set: a world model's windows start one frame apart, so the first 16 would be one clip
        picks = torch.linspace(0, len(held_out) - 1, min(len(held_out), clips)).long().tolist()
        batch = collate([held_out[i] for i in picks])
        self.batch = {k: v.to(dev) for k, v in batch.items()}
        self.held_out, self.cfg, self.out, self.dev, self.log = held_out, cfg, out, dev, log

    def __call__(self, model: torch.nn.Module, step: int, epoch: int) -> float:
        """Write epoch `epoch`'s GIFs and log its validation loss (at `step`); return the loss."""
        cfg, batch = self.cfg, dict(self.batch)
        if cfg.context_frames:  # a world model: real (left) beside a rollout with the real buttons (right)
            rollouts = epoch_rollouts(model, self.held_out.clips, seed=cfg.seed)
            write_gif(self.out / f"rollout_epoch{epoch}.gif", rollouts, cfg.fps)
        else:
            videos = epoch_samples(model, cfg, self.noise, self.dev, batch)
            write_gif(self.out / f"sample_epoch{epoch}.gif", videos[0], cfg.fps)
            write_gif(self.out / f"grid_epoch{epoch}.gif", video_grid(videos), cfg.fps)
        clips = batch.pop("video")
        val_loss = validation_loss(model, clips, seed=cfg.seed, batch_size=cfg.batch_size,
                                   cond=conditioning(model, batch))
        self.log.write(dict(step=step, epoch=epoch, val_loss=val_loss))
        return val_loss


__all__ = ["METRICS", "LOSS_CURVE", "NUM_SAMPLES", "read_metrics", "MetricsLog", "plot_losses", "epoch_samples",
           "epoch_rollouts", "EpochEvaluation"]
